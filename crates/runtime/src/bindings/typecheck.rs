//! The exports' types, checked when a plugin is loaded.
//!
//! `Linker::instantiate_pre` checks what a component imports and the
//! generated `*Pre::new` that each export exists, but the types of exported
//! functions are checked only when an instance is made (the first call). A
//! plugin whose `fetch-employees` takes a number would load and then fail
//! every run. Here each export is checked against the generated Rust types
//! of the contract, with the same check `get_typed_func` makes, without
//! instantiating anything.

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::{self, ComponentItem};

use super::types::{
    Completion, CompletionPage, ConnectorError, Employee, EmployeePage, LmsUser, TrainingRecord,
    WebhookEvent,
};
use crate::bindings::lms::exports::switchyard::connector::batch_provisioning::{
    AccountPage, AccountWrite, AccountWritten, EnrollmentWrite,
};
use crate::{Contract, World};

/// The exported function `name` of the interface `interface` (its name
/// without a version: a plugin of contract 0.2.3 exports `...@0.2.3`).
fn function(
    engine: &Engine,
    component: &types::Component,
    interface: &str,
    name: &str,
) -> Option<types::ComponentFunc> {
    component.exports(engine).find_map(|(export, item)| {
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            return None;
        };
        if export.split('@').next() != Some(interface) {
            return None;
        }
        instance
            .exports(engine)
            .find_map(|(f, item)| match item.ty {
                ComponentItem::ComponentFunc(func) if f == name => Some(func),
                _ => None,
            })
    })
}

/// Check every export of `world` in the `contract` version (0.2.0 added
/// `webhook-source`, 0.3.0 `list-training-records`, 0.4.0 only imports more,
/// 0.5.0 `batch-provisioning`). The error names the
/// function.
pub(crate) fn check_exports(
    engine: &Engine,
    component: &Component,
    world: World,
    contract: Contract,
) -> Result<(), String> {
    let ty = component.component_type();
    let cx = ty.instance_type();
    macro_rules! check {
        ($interface:literal, $name:literal, ($($param:ty),*) -> $result:ty) => {
            let interface = concat!("switchyard:connector/", $interface);
            // A missing export was already reported by `*Pre::new`.
            if let Some(func) = function(engine, &ty, interface, $name) {
                func.typecheck::<($($param,)*), ($result,)>(&cx).map_err(|e| {
                    format!(
                        "`{}` of `{interface}` does not have the contract's type ({e:#}); the contract says {}",
                        $name,
                        stringify!(($($param),*) -> $result)
                    )
                })?;
            }
        };
    }
    type Result<T> = std::result::Result<T, ConnectorError>;
    match world {
        World::Hris => {
            check!("employee-source", "fetch-employees", (Option<String>) -> Result<EmployeePage>);
            check!("completion-sink", "push-completion", (Completion, String, Option<String>) -> Result<()>);
            if contract >= Contract::V0_3 {
                check!("completion-sink", "list-training-records", (String) -> Result<Vec<TrainingRecord>>);
            }
        }
        World::Lms => {
            check!("user-provisioning", "upsert-user", (Employee, Option<String>, String) -> Result<String>);
            check!("user-provisioning", "set-active", (String, bool, String) -> Result<()>);
            check!("user-provisioning", "find-user", (String) -> Result<Option<LmsUser>>);
            check!("enrollment", "enroll", (String, String, Option<String>, String) -> Result<()>);
            check!("enrollment", "unenroll", (String, String, String) -> Result<()>);
            check!("completion-source", "fetch-completions", (Option<String>) -> Result<CompletionPage>);
            if contract >= Contract::Current {
                check!("batch-provisioning", "upsert-users", (Vec<AccountWrite>) -> Result<Vec<Result<AccountWritten>>>);
                check!("batch-provisioning", "enroll-all", (Vec<EnrollmentWrite>) -> Result<Vec<Result<()>>>);
                check!("batch-provisioning", "list-accounts", (Option<String>) -> Result<AccountPage>);
            }
        }
    }
    if contract >= Contract::V0_2 {
        check!("webhook-source", "parse-webhook", (Vec<(String, String)>, Vec<u8>) -> Result<Vec<WebhookEvent>>);
    }
    Ok(())
}
