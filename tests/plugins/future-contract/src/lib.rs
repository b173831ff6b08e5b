//! An HRIS connector built against a contract version this host does not
//! support (`switchyard:connector@9.0.0`): the host must refuse it, naming
//! the version.

wit_bindgen::generate!({
    inline: "
        package switchyard:connector@9.0.0;
        interface types {
            record employee-page { ids: list<string>, next-cursor: option<string> }
        }
        interface employee-source {
            use types.{employee-page};
            fetch-employees: func(cursor: option<string>) -> employee-page;
        }
        interface completion-sink {
            push-completion: func(key: string);
        }
        world hris-connector { export employee-source; export completion-sink; }
    ",
    world: "hris-connector",
});

struct Future;

impl exports::switchyard::connector::employee_source::Guest for Future {
    fn fetch_employees(
        _cursor: Option<String>,
    ) -> exports::switchyard::connector::employee_source::EmployeePage {
        exports::switchyard::connector::employee_source::EmployeePage {
            ids: Vec::new(),
            next_cursor: None,
        }
    }
}

impl exports::switchyard::connector::completion_sink::Guest for Future {
    fn push_completion(_key: String) {}
}

export!(Future);
