//! fastlcel's native core: module wiring only. What runs lives in `runnable/`, where and when it
//! runs in `exec/`.

use pyo3::prelude::*;

mod config;
mod errors;
mod exec;
mod limit;
mod runnable;
mod validate;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::init_pymodule(m)?;
    runnable::init_pymodule(m)?;
    exec::init_pymodule(m)?;
    limit::init_pymodule(m)?;
    // pyo3 lists every name added (`add_class`, `add`...) in `__all__`; the public API is every
    // one but the private hooks.
    let all = m.index()?;
    let public: Vec<String> = all
        .iter()
        .map(|name| name.extract::<String>())
        .collect::<PyResult<Vec<_>>>()?
        .into_iter()
        .filter(|name| !name.starts_with('_'))
        .collect();
    m.setattr("__all__", public)?;
    Ok(())
}
