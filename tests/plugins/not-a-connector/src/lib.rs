//! A valid component that implements no Switchyard world: the host must
//! refuse it, naming what it exports instead.

wit_bindgen::generate!({
    inline: "
        package example:greeter@1.0.0;
        interface greet { hello: func() -> string; }
        world greeter { export greet; }
    ",
    world: "greeter",
});

struct Greeter;

impl exports::example::greeter::greet::Guest for Greeter {
    fn hello() -> String {
        "hello".into()
    }
}

export!(Greeter);
