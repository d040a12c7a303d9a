//! fastlcel's native core: module wiring only. What runs lives in `runnable/`, where and when it
//! runs in `exec/`.

use pyo3::prelude::*;

mod config;
mod errors;
mod exec;
mod limit;
mod runnable;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::init_pymodule(m)?;
    runnable::init_pymodule(m)?;
    exec::init_pymodule(m)?;
    limit::init_pymodule(m)?;
    // pyo3 lists every added name, private hooks included; export the public API only.
    m.setattr(
        "__all__",
        [
            "FastLcelError",
            "PanicError",
            "StepTimeoutError",
            "FastLcelTypeError",
            "FastLcelValueError",
            "Runnable",
            "Lambda",
            "Parallel",
            "Sequence",
            "Passthrough",
            "Assign",
            "Pick",
            "Branch",
            "Binding",
            "Generator",
            "Cached",
            "RateLimiter",
            "ConcurrencyLimit",
        ],
    )?;
    Ok(())
}
