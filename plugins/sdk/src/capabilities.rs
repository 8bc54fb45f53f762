//! The bindings of every host capability, generated once; each kind's
//! bindings use these (`with`), so a plugin has one set of imports.

pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "torii:plugin/host-capabilities",
    });
}
