//! A real SCIM 2.0 server for the SCIM plugin's tests: PyPI `scim2-server`
//! (RFC 7643/7644 in memory: users, groups, PATCH, filters, Bulk), started
//! on 127.0.0.1 with a bearer token and killed when dropped.
//!
//! The server comes from `SWITCHYARD_SCIM2_SERVER` (a path to the
//! `scim2-server` executable) or from the test kit's Python environment
//! ([`crate::python`]). Without Python 3 the tests fail, saying what to
//! install; they never skip.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The version the tests are written against.
pub const SCIM2_SERVER: &str = "scim2-server==0.8.3";

/// A running `scim2-server`; killed on drop.
pub struct ScimServer {
    child: Child,
    url: String,
    token: String,
}

impl Drop for ScimServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `scim2-server` executable.
fn executable() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SWITCHYARD_SCIM2_SERVER") {
        return Ok(PathBuf::from(path));
    }
    crate::python::tool(SCIM2_SERVER, "scim2-server")
}

impl ScimServer {
    /// Start a server on a free loopback port, accepting `token`.
    pub fn start(token: &str) -> anyhow::Result<ScimServer> {
        let server = executable()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(&server)
            .args(["--hostname", "127.0.0.1", "--port", &port.to_string()])
            .args(["--bearer-token", token])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", server.display()))?;
        let scim = ScimServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
            token: token.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if ready {
                return Ok(scim);
            }
            if Instant::now() > deadline {
                bail!("scim2-server did not listen on port {port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The SCIM base URL (`/Users`, `/Groups` are under it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bearer token it accepts.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `GET {url}/{path}` with the token, as JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()?
            .get(format!("{}/{}", self.url, path.trim_start_matches('/')))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?;
        Ok(response.json().await?)
    }

    /// `POST {url}/{path}` of a SCIM JSON body with the token; the created
    /// resource.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()?
            .post(format!("{}/{}", self.url, path.trim_start_matches('/')))
            .bearer_auth(&self.token)
            .header("content-type", "application/scim+json")
            .body(serde_json::to_vec(body)?)
            .send()
            .await?
            .error_for_status()?;
        Ok(response.json().await?)
    }

    /// `DELETE {url}/{path}` with the token.
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        reqwest::Client::builder()
            .no_proxy()
            .build()?
            .delete(format!("{}/{}", self.url, path.trim_start_matches('/')))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Every resource of `kind` (`Users`, `Groups`) matching `filter`
    /// (every one for an empty filter).
    pub async fn list(&self, kind: &str, filter: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let page = if filter.is_empty() {
            self.get(&format!("{kind}?count=1000")).await?
        } else {
            let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
            self.get(&format!("{kind}?filter={encoded}&count=1000"))
                .await?
        };
        Ok(page["Resources"].as_array().cloned().unwrap_or_default())
    }
}
