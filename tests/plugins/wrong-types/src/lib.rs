//! An HRIS connector that claims contract 0.1.0 but whose exports do not
//! have the contract's types (`fetch-employees` takes a number and returns
//! a list of strings): the host must refuse it when it is loaded, naming
//! the function, not fail at the first call.

wit_bindgen::generate!({
    inline: "
        package switchyard:connector@0.1.0;
        interface employee-source {
            fetch-employees: func(cursor: u32) -> list<string>;
        }
        interface completion-sink {
            push-completion: func(key: string);
        }
        world hris-connector { export employee-source; export completion-sink; }
    ",
    world: "hris-connector",
});

struct Wrong;

impl exports::switchyard::connector::employee_source::Guest for Wrong {
    fn fetch_employees(_cursor: u32) -> Vec<String> {
        Vec::new()
    }
}

impl exports::switchyard::connector::completion_sink::Guest for Wrong {
    fn push_completion(_key: String) {}
}

export!(Wrong);
