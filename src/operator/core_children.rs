//! What a `ScaledActionRunnerCore` becomes: the API server stack.

use super::{Child, Settings, SpecError};
use crate::crd::ScaledActionRunnerCore;

pub struct CoreInputs<'a> {
    pub ca_bundle: Option<&'a [u8]>,
    pub front_proxy_ca: Option<&'a str>,
}

pub fn core_children(
    _core: &ScaledActionRunnerCore,
    _settings: &Settings,
    _inputs: &CoreInputs,
) -> Result<Vec<Child>, SpecError> {
    Ok(Vec::new())
}
