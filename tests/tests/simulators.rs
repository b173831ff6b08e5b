//! The simulators' control API, driven over HTTP as an integrator would
//! drive it with curl: hire, change, terminate, rehire, complete a course,
//! inject faults, read the state; and the BambooHR endpoints integrations
//! use most (directory, custom reports). Syncs run the real plugins.

use serde_json::{Value, json};
use switchyard_testkit::harness::{Harness, LINK};

struct Control {
    http: reqwest::Client,
    hris: String,
    lms: String,
}

impl Control {
    fn of(h: &Harness) -> Self {
        Control {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            hris: h.hris.base_url(),
            lms: h.lms.base_url(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let response = req.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, body)
    }

    async fn hris(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.hris));
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req).await
    }

    async fn lms(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.lms));
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req).await
    }

    /// The LMS accounts whose idnumber is `id`.
    async fn accounts_of(&self, id: &str) -> Vec<Value> {
        let (_, state) = self.lms("GET", "/_sim/state", None).await;
        state["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["idnumber"] == id)
            .cloned()
            .collect()
    }

    /// The course idnumbers `id` is enrolled in.
    async fn courses_of(&self, id: &str) -> Vec<String> {
        let (_, state) = self.lms("GET", "/_sim/state", None).await;
        let mut courses: Vec<String> = state["enrolments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["user_idnumber"] == id)
            .map(|e| e["course_idnumber"].as_str().unwrap().to_owned())
            .collect();
        courses.sort();
        courses
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_drives_a_whole_lifecycle_over_http() {
    let h = Harness::start(3).await.unwrap();
    let c = Control::of(&h);
    let service = h.service().unwrap();
    service.sync_link(LINK).await.unwrap();

    // A hire: fields in the API's camelCase, the id given by the simulator.
    let (status, hired) = c
        .hris(
            "POST",
            "/_sim/employees",
            Some(json!({
                "firstName": "Nora", "lastName": "Quist", "workEmail": "nora.quist@acme.example",
                "department": "Warehouse", "jobTitle": "Forklift Operator", "location": "Leeds",
            })),
        )
        .await;
    assert_eq!(status, 201, "{hired}");
    let id = hired["id"].as_str().unwrap().to_owned();
    assert_eq!(id, "104", "the next id after the three seeded");
    assert_eq!(hired["status"], "Active");
    service.sync_link(LINK).await.unwrap();
    let accounts = c.accounts_of(&id).await;
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(accounts[0]["email"], "nora.quist@acme.example");
    assert_eq!(accounts[0]["suspended"], false);
    let account_id = accounts[0]["id"].clone();
    assert!(
        c.courses_of(&id)
            .await
            .contains(&"FORKLIFT-CERT".to_owned()),
        "a forklift operator gets the forklift course"
    );

    // An email change reaches the same account.
    let (status, _) = c
        .hris(
            "PATCH",
            &format!("/_sim/employees/{id}"),
            Some(json!({ "workEmail": "nora.q@acme.example" })),
        )
        .await;
    assert_eq!(status, 200);
    service.sync_link(LINK).await.unwrap();
    let accounts = c.accounts_of(&id).await;
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["email"], "nora.q@acme.example");

    // A termination suspends, a rehire reactivates the same account.
    let (status, terminated) = c
        .hris(
            "POST",
            &format!("/_sim/employees/{id}/terminate"),
            Some(json!({ "date": "2026-06-30" })),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(terminated["employmentHistoryStatus"], "Terminated");
    assert_eq!(terminated["terminationDate"], "2026-06-30");
    service.sync_link(LINK).await.unwrap();
    assert_eq!(c.accounts_of(&id).await[0]["suspended"], true);

    let (status, _) = c
        .hris("POST", &format!("/_sim/employees/{id}/rehire"), None)
        .await;
    assert_eq!(status, 200);
    service.sync_link(LINK).await.unwrap();
    let accounts = c.accounts_of(&id).await;
    assert_eq!(accounts.len(), 1, "a rehire keeps the account");
    assert_eq!(accounts[0]["id"], account_id);
    assert_eq!(accounts[0]["suspended"], false);

    // A completion in the LMS becomes a training record in the HRIS.
    let (status, done) = c
        .lms(
            "POST",
            "/_sim/completions",
            Some(
                json!({ "idnumber": id, "course": "FORKLIFT-CERT", "grade": 91.5, "passed": true }),
            ),
        )
        .await;
    assert_eq!(status, 201, "{done}");
    service.sync_link(LINK).await.unwrap();
    let (_, state) = c.hris("GET", "/_sim/state", None).await;
    let forklift = state["trainingTypes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "FORKLIFT-CERT")
        .unwrap()["id"]
        .clone();
    let records: Vec<&Value> = state["trainingRecords"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["employee_id"] == id.as_str())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["type_id"], forklift);

    // Control requests are not in the request logs the tests count.
    let (_, log) = c.hris("GET", "/_sim/requests", None).await;
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .all(|r| !r["path"].as_str().unwrap().starts_with("/_sim"))
    );
    assert!(!log.as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_faults_answer_statuses_and_drop_connections() {
    let h = Harness::start(2).await.unwrap();
    let c = Control::of(&h);
    let key = h.hris.api_key();
    let types = |c: &Control| {
        c.http
            .get(format!("{}/api/v1/training/type", c.hris))
            .basic_auth(&key, Some("x"))
    };

    // A status with Retry-After, twice, then the real answer.
    let (status, _) = c
        .hris(
            "POST",
            "/_sim/faults",
            Some(json!({ "status": 429, "retry_after": 7, "times": 2 })),
        )
        .await;
    assert_eq!(status, 201);
    for _ in 0..2 {
        let r = types(&c).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers()["retry-after"], "7");
    }
    assert_eq!(types(&c).send().await.unwrap().status().as_u16(), 200);

    // A reset before: the connection ends without an answer.
    c.hris("POST", "/_sim/faults", Some(json!({ "reset": "before" })))
        .await;
    let err = types(&c).send().await.unwrap_err();
    assert!(!err.is_status(), "{err}");

    // A reset after: the write is applied, the answer lost.
    c.hris(
        "POST",
        "/_sim/faults",
        Some(json!({ "reset": "after", "path": "/api/v1/training/record" })),
    )
    .await;
    let write = c
        .http
        .post(format!("{}/api/v1/training/record/employee/101", c.hris))
        .basic_auth(&key, Some("x"))
        .json(&json!({ "completed": "2026-02-01", "type": 1 }))
        .send()
        .await;
    assert!(write.is_err(), "the answer is lost");
    assert_eq!(h.hris.training_records().len(), 1, "the write happened");

    let (_, faults) = c.hris("GET", "/_sim/faults", None).await;
    assert_eq!(faults["injected"], 4);
    assert_eq!(faults["pending"], json!([]));

    // Bad rules are refused with the reason.
    let (status, body) = c
        .hris("POST", "/_sim/faults", Some(json!({ "status": 200 })))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not an error status")
    );
    let (status, body) = c
        .lms("POST", "/_sim/faults", Some(json!({ "stauts": 503 })))
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("stauts"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_survives_the_faults_a_test_scripts_without_duplicates() {
    let h = Harness::start(4).await.unwrap();
    let c = Control::of(&h);
    let service = h.service().unwrap();
    // Every LMS write's first attempt is applied and its answer lost; the
    // HRIS throttles its first two requests.
    c.lms(
        "POST",
        "/_sim/faults",
        Some(json!({ "reset": "after", "times": 3 })),
    )
    .await;
    c.hris(
        "POST",
        "/_sim/faults",
        Some(json!({ "status": 503, "retry_after": 0, "times": 2 })),
    )
    .await;
    service.sync_link(LINK).await.unwrap();

    let (_, state) = c.lms("GET", "/_sim/state", None).await;
    let users = state["users"].as_array().unwrap();
    let mut idnumbers: Vec<&str> = users
        .iter()
        .map(|u| u["idnumber"].as_str().unwrap())
        .collect();
    idnumbers.sort();
    let before = idnumbers.len();
    idnumbers.dedup();
    assert_eq!(
        before,
        idnumbers.len(),
        "no duplicate account: {idnumbers:?}"
    );
    assert!(!idnumbers.is_empty());
    let (_, faults) = c.lms("GET", "/_sim/faults", None).await;
    assert_eq!(faults["injected"], 3);
    let (_, faults) = c.hris("GET", "/_sim/faults", None).await;
    assert_eq!(faults["injected"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_control_requests_get_a_clear_error_and_change_nothing() {
    let h = Harness::start(2).await.unwrap();
    let c = Control::of(&h);
    let before = h.hris.employees();

    let (status, body) = c
        .hris(
            "PATCH",
            "/_sim/employees/101",
            Some(json!({ "departmnet": "Sales" })),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("departmnet"));
    let (status, body) = c
        .hris(
            "PATCH",
            "/_sim/employees/101",
            Some(json!({ "hireDate": "01/02/2020" })),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("hireDate"));
    let (status, _) = c.hris("POST", "/_sim/employees/999/terminate", None).await;
    assert_eq!(status, 404);
    let (status, _) = c
        .hris("POST", "/_sim/employees", Some(json!({ "id": "101" })))
        .await;
    assert_eq!(status, 409);
    assert_eq!(h.hris.employees(), before, "nothing changed");

    let (status, body) = c
        .lms(
            "POST",
            "/_sim/completions",
            Some(json!({ "idnumber": "nobody", "course": "SAFETY-2026" })),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("nobody"));
    let (status, _) = c
        .lms(
            "POST",
            "/_sim/users",
            Some(json!({ "username": "jdoe", "email": "j@x.example" })),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = c
        .lms(
            "POST",
            "/_sim/users",
            Some(json!({ "username": "JDoe", "email": "j2@x.example" })),
        )
        .await;
    assert_eq!(status, 409, "usernames are unique, case-insensitively");
    let (status, course) = c
        .lms(
            "POST",
            "/_sim/courses",
            Some(json!({ "idnumber": "GDPR-101" })),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(course["fullname"], "Gdpr 101");
    assert_eq!(h.lms.completions().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_and_custom_reports_have_bamboohr_shapes() {
    let h = Harness::start(10).await.unwrap();
    let c = Control::of(&h);
    let key = h.hris.api_key();

    let directory: Value = c
        .http
        .get(format!("{}/api/v1/employees/directory", c.hris))
        .basic_auth(&key, Some("x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fields = directory["fields"].as_array().unwrap();
    assert!(
        fields
            .iter()
            .any(|f| f["id"] == "workEmail" && f["type"] == "email")
    );
    let listed = directory["employees"].as_array().unwrap();
    let active = h
        .hris
        .employees()
        .iter()
        .filter(|e| e.status == "Active")
        .count();
    assert_eq!(
        listed.len(),
        active,
        "the directory lists current employees"
    );
    assert!(listed.len() < 10, "seed 7 is terminated");
    let first = &listed[0];
    assert_eq!(first["id"], "101");
    assert_eq!(
        first["displayName"],
        format!(
            "{} {}",
            first["firstName"].as_str().unwrap(),
            first["lastName"].as_str().unwrap()
        )
    );

    // A custom report: the fields asked for, the id always, every employee.
    let report = |body: Value| {
        c.http
            .post(format!("{}/api/v1/reports/custom?format=JSON", c.hris))
            .basic_auth(&key, Some("x"))
            .json(&body)
            .send()
    };
    let all: Value = report(json!({ "title": "LMS feed", "fields": ["firstName", "department", "terminationDate", "noSuchField"] }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["title"], "LMS feed");
    assert_eq!(
        all["fields"][1],
        json!({ "id": "department", "type": "list", "name": "Department" })
    );
    let rows = all["employees"].as_array().unwrap();
    assert_eq!(rows.len(), 10);
    assert_eq!(rows[0].as_object().unwrap().len(), 5, "id plus four fields");
    assert_eq!(rows[0]["noSuchField"], Value::Null);

    // filters.lastChanged: only employees changed after the instant.
    let (_, state) = c.hris("GET", "/_sim/state", None).await;
    let now = state["now"].as_str().unwrap().to_owned();
    c.hris(
        "PATCH",
        "/_sim/employees/103",
        Some(json!({ "department": "Sales" })),
    )
    .await;
    let changed: Value = report(json!({
        "fields": ["department"],
        "filters": { "lastChanged": { "includeNull": "no", "value": now } },
    }))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        changed["employees"],
        json!([{ "id": "103", "department": "Sales" }])
    );

    // Other formats are refused, and the routes need the API key.
    let csv = c
        .http
        .post(format!("{}/api/v1/reports/custom?format=CSV", c.hris))
        .basic_auth(&key, Some("x"))
        .json(&json!({ "fields": ["firstName"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status().as_u16(), 400);
    let anonymous = c
        .http
        .get(format!("{}/api/v1/employees/directory", c.hris))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
}
