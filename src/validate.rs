//! The one validation of every argument and config key fastlcel takes. Each constructor, wrapper
//! and call method checks what it is given here, before anything runs, so that a value is
//! accepted or refused alike on every path. A refusal is a `FastLcelTypeError` (wrong type) or
//! a `FastLcelValueError` (wrong value) whose message names the argument, shows the value and
//! says what is allowed. Booleans are not counts, and a value too large to mean anything is
//! refused as too large.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::errors::{type_error, value_error};
use crate::exec::blocking::{self, Detect};
use crate::exec::progress::Spec;

/// The largest count taken anywhere (`sys.maxsize` on 64-bit platforms).
pub(crate) const MAX_COUNT: u64 = i64::MAX as u64;
/// The longest duration taken anywhere, in seconds (about 31 years): a timeout or a cache
/// lifetime longer than that means "never", which is spelled `None`.
pub(crate) const MAX_SECONDS: f64 = 1e9;
/// The highest request rate a `RateLimiter` takes: one request per nanosecond.
pub(crate) const MAX_RATE: f64 = 1e9;

/// `value` as shown in a message: its repr (shortened) and, for a type error, its type.
fn shown(value: &Bound<'_, PyAny>) -> String {
    let repr = value
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unprintable>".to_owned());
    if repr.chars().count() > 60 {
        format!("{}...", repr.chars().take(57).collect::<String>())
    } else {
        repr
    }
}

/// `value` as shown in a message about its type: `'x' (a str)`.
pub(crate) fn shown_with_type(value: &Bound<'_, PyAny>) -> String {
    format!("{} ({})", shown(value), crate::runnable::describe(value))
}

/// A count: a positive int (not a bool) of at most `max`. `what` names the argument
/// (`with_retry(stop_after_attempt)`, `config['max_concurrency']`), `meaning` says what it
/// counts.
pub(crate) fn count(
    value: &Bound<'_, PyAny>,
    what: &str,
    meaning: &str,
    max: u64,
) -> PyResult<u64> {
    let expected = || format!("{what} must be a positive int ({meaning})");
    if value.is_instance_of::<PyBool>() {
        return Err(type_error(format!(
            "{}, not a bool; got {}",
            expected(),
            shown(value)
        )));
    }
    let n = int(value)
        .ok_or_else(|| type_error(format!("{}; got {}", expected(), shown_with_type(value))))?;
    match n {
        Int::Small(n) if n >= 1 && n.unsigned_abs() <= max => Ok(n.unsigned_abs()),
        Int::Small(n) if n < 1 => Err(value_error(format!("{}; got {n}", expected()))),
        Int::Huge { negative: true } => {
            Err(value_error(format!("{}; got {}", expected(), shown(value))))
        }
        _ => Err(too_large(what, value, &max.to_string())),
    }
}

/// [`count`], or `None` for a missing or `None` value.
pub(crate) fn optional_count(
    value: Option<&Bound<'_, PyAny>>,
    what: &str,
    meaning: &str,
    max: u64,
) -> PyResult<Option<u64>> {
    match value.filter(|v| !v.is_none()) {
        Some(v) => count(v, what, meaning, max).map(Some),
        None => Ok(None),
    }
}

/// Any int (not a bool) that fits in 64 bits: a limit that may be zero or negative.
pub(crate) fn integer(value: &Bound<'_, PyAny>, what: &str) -> PyResult<i64> {
    let expected = || format!("{what} must be an int");
    if value.is_instance_of::<PyBool>() {
        return Err(type_error(format!(
            "{}, not a bool; got {}",
            expected(),
            shown(value)
        )));
    }
    match int(value) {
        Some(Int::Small(n)) => Ok(n),
        Some(Int::Huge { .. }) => Err(too_large(what, value, &i64::MAX.to_string())),
        None => Err(type_error(format!(
            "{}; got {}",
            expected(),
            shown_with_type(value)
        ))),
    }
}

enum Int {
    Small(i64),
    /// Beyond 64 bits.
    Huge {
        negative: bool,
    },
}

/// An int's value: an `int` or anything with `__index__` (numpy's ints), but no float.
fn int(value: &Bound<'_, PyAny>) -> Option<Int> {
    if !value.is_instance_of::<PyInt>() && !value.hasattr("__index__").unwrap_or(false) {
        return None;
    }
    match value.extract::<i64>() {
        Ok(n) => Some(Int::Small(n)),
        Err(_) => {
            let negative = value.lt(0).ok()?;
            // Only an overflow is left: `__index__` gave an int, too large for 64 bits.
            value.call_method0("__index__").ok()?;
            Some(Int::Huge { negative })
        }
    }
}

/// A duration in seconds: a positive number (int or float, not a bool) of at most
/// [`MAX_SECONDS`].
pub(crate) fn seconds(value: &Bound<'_, PyAny>, what: &str) -> PyResult<f64> {
    let seconds = number(value, what, "a positive number of seconds")?;
    if seconds.is_nan() || seconds <= 0.0 {
        return Err(value_error(format!(
            "{what} must be a positive number of seconds; got {}",
            shown(value)
        )));
    }
    if seconds > MAX_SECONDS {
        return Err(too_large(
            what,
            value,
            &format!("{MAX_SECONDS:e} seconds (about 31 years; None means no limit)"),
        ));
    }
    Ok(seconds)
}

/// [`seconds`], or `None` for a missing or `None` value.
pub(crate) fn optional_seconds(
    value: Option<&Bound<'_, PyAny>>,
    what: &str,
) -> PyResult<Option<f64>> {
    match value.filter(|v| !v.is_none()) {
        Some(v) => seconds(v, what).map(Some),
        None => Ok(None),
    }
}

/// A number that may be zero (a backoff parameter): finite, not negative, at most `max`.
pub(crate) fn non_negative(value: &Bound<'_, PyAny>, what: &str, max: f64) -> PyResult<f64> {
    let x = number(value, what, "a non-negative number")?;
    if x.is_nan() || x < 0.0 {
        return Err(value_error(format!(
            "{what} must be a non-negative number; got {}",
            shown(value)
        )));
    }
    if x > max {
        return Err(too_large(what, value, &format!("{max:e}")));
    }
    Ok(x)
}

/// A request rate: a positive number of requests per second, from one per [`MAX_SECONDS`] up
/// to [`MAX_RATE`].
pub(crate) fn rate(value: &Bound<'_, PyAny>, what: &str) -> PyResult<f64> {
    let rps = number(value, what, "a positive number of requests per second")?;
    if rps.is_nan() || rps <= 0.0 {
        return Err(value_error(format!(
            "{what} must be a positive number of requests per second; got {}",
            shown(value)
        )));
    }
    if rps > MAX_RATE {
        return Err(too_large(
            what,
            value,
            &format!("{MAX_RATE:e} (one request per nanosecond)"),
        ));
    }
    if rps < 1.0 / MAX_SECONDS {
        return Err(value_error(format!(
            "{what} is too small: got {}; at least {:e} (one request per {MAX_SECONDS:e} seconds)",
            shown(value),
            1.0 / MAX_SECONDS
        )));
    }
    Ok(rps)
}

/// A real number (an int or a float, not a bool); `expected` says what is allowed.
fn number(value: &Bound<'_, PyAny>, what: &str, expected: &str) -> PyResult<f64> {
    let wrong = || {
        type_error(format!(
            "{what} must be {expected}; got {}",
            shown_with_type(value)
        ))
    };
    if value.is_instance_of::<PyBool>() {
        return Err(type_error(format!(
            "{what} must be {expected}, not a bool; got {}",
            shown(value)
        )));
    }
    if value.is_instance_of::<PyFloat>() || value.is_instance_of::<PyInt>() {
        return match value.extract::<f64>() {
            Ok(x) => Ok(x),
            // An int beyond a float's range.
            Err(_) if value.lt(0).unwrap_or(false) => Err(value_error(format!(
                "{what} must be {expected}; got {}",
                shown(value)
            ))),
            Err(_) => Err(too_large(what, value, "what a float holds")),
        };
    }
    // Other real numbers (numpy's, Fraction, Decimal) through `float()`; never a str.
    if value.is_instance_of::<PyString>() || !value.hasattr("__float__").unwrap_or(false) {
        return Err(wrong());
    }
    value.extract::<f64>().map_err(|_| wrong())
}

fn too_large(what: &str, value: &Bound<'_, PyAny>, max: &str) -> PyErr {
    value_error(format!(
        "{what} is too large: got {}; at most {max}",
        shown(value)
    ))
}

/// A flag: `True` or `False` (no other value stands for one).
pub(crate) fn flag(value: &Bound<'_, PyAny>, what: &str) -> PyResult<bool> {
    value.cast::<PyBool>().map(|b| b.is_true()).map_err(|_| {
        type_error(format!(
            "{what} must be True or False; got {}",
            shown_with_type(value)
        ))
    })
}

/// A name: a str, or `None` for the default one.
pub(crate) fn name<'py>(
    value: Option<&Bound<'py, PyAny>>,
    what: &str,
) -> PyResult<Option<Bound<'py, PyString>>> {
    match value.filter(|v| !v.is_none()) {
        None => Ok(None),
        Some(v) => v.cast::<PyString>().map(|s| Some(s.clone())).map_err(|_| {
            type_error(format!(
                "{what} must be a str or None; got {}",
                shown_with_type(v)
            ))
        }),
    }
}

/// Something to iterate (`iter()` works on it), or to iterate asynchronously if `or_async`.
/// Only its type is looked at: nothing is iterated yet.
pub(crate) fn iterable(
    value: &Bound<'_, PyAny>,
    what: &str,
    expected: &str,
    or_async: bool,
) -> PyResult<()> {
    let has = |name: &str| value.get_type().hasattr(name).unwrap_or(false);
    if has("__iter__") || has("__getitem__") || (or_async && has("__aiter__")) {
        return Ok(());
    }
    Err(type_error(format!(
        "{what} must be {expected}; got {}",
        shown_with_type(value)
    )))
}

/// `config['progress']`: True (a bar labelled with the runnable's name), a label, or a dict of
/// tqdm's keyword arguments (its `desc` is the label); `None` or False: no bar.
pub(crate) fn progress(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Spec>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    if let Ok(on) = value.cast::<PyBool>() {
        return Ok(on.is_true().then_some(Spec {
            label: None,
            options: None,
        }));
    }
    if let Ok(label) = value.cast::<PyString>() {
        return Ok(Some(Spec {
            label: Some(label.to_str()?.to_owned()),
            options: None,
        }));
    }
    if let Ok(options) = value.cast::<PyDict>() {
        if let Some((key, _)) = options
            .iter()
            .find(|(k, _)| !k.is_instance_of::<PyString>())
        {
            return Err(type_error(format!(
                "config['progress'] options must have str keys (tqdm's keyword arguments); \
                 got key {}",
                shown_with_type(&key)
            )));
        }
        let label = match options.get_item("desc")? {
            Some(desc) if !desc.is_none() => Some(desc.str()?.to_string()),
            _ => None,
        };
        return Ok(Some(Spec {
            label,
            options: Some(options.copy()?.unbind()),
        }));
    }
    Err(type_error(format!(
        "config['progress'] must be True, a label (str) or a dict of tqdm options, or None or \
         False for no bar; got {}",
        shown_with_type(value)
    )))
}

/// `config['warn_blocking']`: True (a threshold of 100 ms), a threshold in seconds, or False
/// (never, even in asyncio's debug mode); `None`: in asyncio's debug mode only.
pub(crate) fn warn_blocking(value: Option<&Bound<'_, PyAny>>) -> PyResult<Detect> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(Detect::default());
    };
    if let Ok(on) = value.cast::<PyBool>() {
        return Ok(if on.is_true() {
            Detect::On(blocking::DEFAULT_THRESHOLD)
        } else {
            Detect::Off
        });
    }
    let what = "config['warn_blocking']";
    if !value.is_instance_of::<PyInt>() && !value.is_instance_of::<PyFloat>() {
        return Err(type_error(format!(
            "{what} must be True, False, None or a threshold in seconds; got {}",
            shown_with_type(value)
        )));
    }
    Ok(Detect::On(Duration::from_secs_f64(seconds(value, what)?)))
}

/// The config keys fastlcel reads or merges itself, checked once per call: what `RunConfig`
/// interprets (`max_concurrency`, `recursion_limit`, `timeout`, the limiters) is checked where
/// it is parsed; the containers it copies and merges are checked here.
pub(crate) fn config_containers(config: &Bound<'_, PyDict>) -> PyResult<()> {
    for (key, value) in config.iter() {
        if value.is_none() {
            continue;
        }
        let Ok(key) = key.cast::<PyString>() else {
            return Err(type_error(format!(
                "config keys must be str; got {}",
                shown_with_type(&key)
            )));
        };
        let key = key.to_cow()?;
        let ok = match key.as_ref() {
            "tags" => {
                (value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>())
                    && value
                        .try_iter()?
                        .all(|t| t.is_ok_and(|t| t.is_instance_of::<PyString>()))
            }
            "metadata" | "configurable" => value.is_instance_of::<PyDict>(),
            "run_name" => value.is_instance_of::<PyString>(),
            _ => true,
        };
        if !ok {
            let expected = match key.as_ref() {
                "tags" => "a list of str",
                "run_name" => "a str",
                _ => "a dict",
            };
            return Err(type_error(format!(
                "config['{key}'] must be {expected} or None; got {}",
                shown_with_type(&value)
            )));
        }
    }
    Ok(())
}

/// Arguments whose default is a value (not `None`), checked as pyo3 extracts them: each type
/// knows its argument's name and what it allows.
macro_rules! argument {
    ($(#[$doc:meta])* $ty:ident($inner:ty), $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub(crate) struct $ty(pub(crate) $inner);

        impl<'a, 'py> FromPyObject<'a, 'py> for $ty {
            type Error = PyErr;

            fn extract(obj: pyo3::Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
                let check: fn(&Bound<'py, PyAny>) -> PyResult<$inner> = $check;
                check(&obj).map(Self)
            }
        }
    };
}

argument!(
    /// `return_exceptions=` of the batch methods.
    ReturnExceptions(bool),
    |v| flag(v, "return_exceptions")
);
argument!(
    /// `with_retry(wait_exponential_jitter=)`.
    Jitter(bool),
    |v| flag(v, "with_retry(wait_exponential_jitter)")
);
argument!(
    /// `with_retry(stop_after_attempt=)`.
    Attempts(u32),
    |v| {
        let what = "with_retry(stop_after_attempt)";
        let n = count(v, what, "the number of attempts, the first included", u32::MAX.into())?;
        Ok(u32::try_from(n).expect("at most u32::MAX"))
    }
);
argument!(
    /// `with_cache(maxsize=)`: `None` for no bound.
    CacheSize(Option<usize>),
    |v| {
        let n = optional_count(Some(v), "with_cache(maxsize)", "entries kept; None for no bound", MAX_COUNT)?;
        Ok(n.map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
    }
);
argument!(
    /// `RateLimiter(burst=)`.
    Burst(u32),
    |v| {
        let n = count(v, "RateLimiter(burst)", "calls allowed at once", u32::MAX.into())?;
        Ok(u32::try_from(n).expect("at most u32::MAX"))
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    fn with_py<R>(f: impl FnOnce(Python<'_>) -> R) -> R {
        Python::initialize();
        Python::attach(f)
    }

    fn eval<'py>(py: Python<'py>, code: &str) -> Bound<'py, PyAny> {
        let code = std::ffi::CString::new(code).unwrap();
        py.eval(&code, None, None).unwrap()
    }

    fn message(err: PyErr) -> String {
        Python::attach(|py| err.value(py).to_string())
    }

    #[test]
    fn counts_are_positive_ints_and_never_bools() {
        with_py(|py| {
            assert_eq!(count(&eval(py, "3"), "n", "things", 10).unwrap(), 3);
            let bool_err = count(&eval(py, "True"), "n", "things", 10).unwrap_err();
            assert!(bool_err.is_instance_of::<pyo3::exceptions::PyTypeError>(py));
            assert!(message(bool_err).contains("not a bool"));
            let zero = count(&eval(py, "0"), "n", "things", 10).unwrap_err();
            assert!(zero.is_instance_of::<pyo3::exceptions::PyValueError>(py));
            assert!(
                message(count(&eval(py, "11"), "n", "things", 10).unwrap_err())
                    .contains("too large")
            );
            assert!(
                message(count(&eval(py, "2**70"), "n", "things", 10).unwrap_err())
                    .contains("too large")
            );
            assert!(
                message(count(&eval(py, "-2**70"), "n", "things", 10).unwrap_err())
                    .contains("positive")
            );
            let float = count(&eval(py, "2.0"), "n", "things", 10).unwrap_err();
            assert!(float.is_instance_of::<pyo3::exceptions::PyTypeError>(py));
            assert!(message(float).contains("2.0 (a float)"));
        });
    }

    #[test]
    fn seconds_are_positive_finite_and_bounded() {
        with_py(|py| {
            assert_eq!(seconds(&eval(py, "1.5"), "t").unwrap(), 1.5);
            assert_eq!(seconds(&eval(py, "2"), "t").unwrap(), 2.0);
            for bad in ["0", "-1", "float('nan')"] {
                assert!(message(seconds(&eval(py, bad), "t").unwrap_err()).contains("positive"));
            }
            for huge in ["float('inf')", "2**70", "10**400"] {
                assert!(message(seconds(&eval(py, huge), "t").unwrap_err()).contains("too large"));
            }
            for wrong in ["'1'", "True", "None"] {
                let err = seconds(&eval(py, wrong), "t").unwrap_err();
                assert!(err.is_instance_of::<pyo3::exceptions::PyTypeError>(py));
            }
        });
    }

    #[test]
    fn rates_are_bounded_both_ways() {
        with_py(|py| {
            assert_eq!(rate(&eval(py, "20"), "r").unwrap(), 20.0);
            assert!(message(rate(&eval(py, "2**1000"), "r").unwrap_err()).contains("too large"));
            assert!(message(rate(&eval(py, "1e-300"), "r").unwrap_err()).contains("too small"));
        });
    }

    #[test]
    fn flags_and_names_take_their_own_type_only() {
        with_py(|py| {
            assert!(flag(&eval(py, "True"), "f").unwrap());
            assert!(message(flag(&eval(py, "1"), "f").unwrap_err()).contains("True or False"));
            assert!(name(Some(&eval(py, "None")), "n").unwrap().is_none());
            assert!(message(name(Some(&eval(py, "1")), "n").unwrap_err()).contains("str or None"));
        });
    }
}
