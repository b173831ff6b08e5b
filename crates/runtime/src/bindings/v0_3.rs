//! Contract 0.3.0 (`wit/since_v0.3.0`). Its records are the current ones
//! (0.4.0 added the `shared` import, 0.5.0 an export), so `types` maps
//! onto the current module and calls need no conversion; its imports are
//! registered under their 0.3.0 names and delegate to the current
//! implementations (`capability`).

pub mod hris {
    wasmtime::component::bindgen!({
        world: "hris-connector",
        path: "../../wit/since_v0.3.0",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "switchyard:connector/types@0.3.0": crate::bindings::types,
        },
    });
}
pub mod lms {
    wasmtime::component::bindgen!({
        world: "lms-connector",
        path: "../../wit/since_v0.3.0",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "switchyard:connector/types@0.3.0": crate::bindings::types,
            "switchyard:connector/http@0.3.0": super::hris::switchyard::connector::http,
            "switchyard:connector/log@0.3.0": super::hris::switchyard::connector::log,
            "switchyard:connector/config@0.3.0": super::hris::switchyard::connector::config,
        },
    });
}
