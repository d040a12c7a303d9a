//! `with_config`, `bind` and `with_types`: a runnable with a config, call arguments and types
//! of its own, like langchain_core's `RunnableBinding`.

use std::any::Any;
use std::sync::Arc;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};
use pyo3::{PyTraverseError, PyTypeInfo};

use super::base::{BindingParts, Node, Runnable, Streaming};
use super::{describe, Args, Step};
use crate::config::RunConfig;
use crate::errors::type_error;
use crate::exec::coro::StepFuture;
use crate::exec::stream::Chunks;
use crate::exec::{Caller, Kind};

pub(crate) struct BindingNode {
    pub(crate) bound: Step,
    /// Merged under each call's config.
    config: Py<PyDict>,
    /// Extra keyword arguments for the bound runnable's function (or `invoke`).
    kwargs: Py<PyDict>,
    /// Functions of the merged config whose configs are merged into it at each call.
    config_factories: Py<PyList>,
    /// The types it declares (`with_types`); its schemas follow them.
    input_type: Option<Py<PyAny>>,
    output_type: Option<Py<PyAny>>,
}

impl BindingNode {
    pub(crate) fn from_parts(parts: BindingParts<'_>) -> Self {
        Self {
            bound: parts.bound,
            config: parts.config.unbind(),
            kwargs: parts.kwargs.unbind(),
            config_factories: parts.config_factories.unbind(),
            input_type: parts.input_type,
            output_type: parts.output_type,
        }
    }

    /// Its parts, to make another binding of the same runnable.
    pub(crate) fn parts<'py>(&self, py: Python<'py>) -> BindingParts<'py> {
        BindingParts {
            bound: self.bound.clone_ref(py),
            config: self.config.bind(py).clone(),
            kwargs: self.kwargs.bind(py).clone(),
            config_factories: self.config_factories.bind(py).clone(),
            input_type: self.input_type.as_ref().map(|t| t.clone_ref(py)),
            output_type: self.output_type.as_ref().map(|t| t.clone_ref(py)),
        }
    }

    /// The bound runnable's arguments: this binding's config merged under the call's, then the
    /// factories' configs merged in (langchain_core's `_merge_configs`); its keyword arguments
    /// under the call's.
    fn args(&self, args: &Args) -> PyResult<Args> {
        Python::attach(|py| {
            let mut config = args.config.merged_under(self.config.bind(py))?;
            let factories = self.config_factories.bind(py);
            if !factories.is_empty() {
                let merged = config.user_dict(py);
                let mut with_factories = config;
                for factory in factories.iter() {
                    let made = factory.call1((&merged,))?;
                    with_factories = RunConfig::parse(Some(&made))?
                        .merged_under(&with_factories.user_dict(py))?;
                }
                config = with_factories;
            }
            let kwargs = self.kwargs.bind(py).copy()?;
            if let Some(extra) = args.kwargs(py) {
                kwargs.update(extra.as_mapping())?;
            }
            Ok(Args {
                config: Arc::new(config),
                kwargs: Some(Arc::new(kwargs.unbind())),
                run: None,
                batched: args.batched,
                name: None,
            })
        })
    }
}

impl Node for BindingNode {
    fn kind(&self) -> Kind {
        self.bound.kind()
    }

    /// The bound runnable, right here (a binding is placed as what it binds).
    fn run(self: Arc<Self>, input: Py<PyAny>, args: Args, mode: Caller) -> StepFuture {
        match self.args(&args) {
            Ok(args) => self.bound.here().run(input, self.bound.named(args), mode),
            Err(err) => Box::pin(async move { Err(err) }),
        }
    }

    /// Transparent: the bound runnable's run is the call's (as langchain_core's RunnableBinding).
    fn opens_run(&self) -> bool {
        false
    }

    fn streaming(&self) -> Streaming {
        Streaming::Delegate
    }

    fn transform(self: Arc<Self>, input: Chunks, args: Args, mode: Caller) -> Chunks {
        match self.args(&args) {
            Ok(args) => self
                .bound
                .here()
                .stream(input, self.bound.named(args), mode),
            Err(err) => Chunks::failed(err, mode),
        }
    }

    fn name(&self, py: Python<'_>) -> String {
        self.bound.name(py)
    }

    fn named_by_class(&self) -> bool {
        false
    }

    /// langchain_core's (a pydantic model's): its fields, the declared types where set.
    fn repr(&self, py: Python<'_>) -> PyResult<String> {
        let mut repr = format!(
            "RunnableBinding(bound={}, kwargs={}, config={}, config_factories={}",
            self.bound.object(py).bind(py).repr()?,
            self.kwargs.bind(py).repr()?,
            self.config.bind(py).repr()?,
            self.config_factories.bind(py).repr()?
        );
        if let Some(t) = &self.input_type {
            repr.push_str(&format!(", custom_input_type={}", t.bind(py).repr()?));
        }
        if let Some(t) = &self.output_type {
            repr.push_str(&format!(", custom_output_type={}", t.bind(py).repr()?));
        }
        repr.push(')');
        Ok(repr)
    }

    fn class<'py>(&self, py: Python<'py>) -> Bound<'py, PyType> {
        Binding::type_object(py)
    }

    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let fields = PyDict::new(py);
        fields.set_item("bound", self.bound.object(py))?;
        fields.set_item("kwargs", &self.kwargs)?;
        fields.set_item("config", &self.config)?;
        fields.set_item("config_factories", &self.config_factories)?;
        if let Some(t) = &self.input_type {
            fields.set_item("custom_input_type", t)?;
        }
        if let Some(t) = &self.output_type {
            fields.set_item("custom_output_type", t)?;
        }
        Ok(fields)
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.bound.traverse(visit)?;
        visit.call(&self.config)?;
        visit.call(&self.kwargs)?;
        visit.call(&self.config_factories)?;
        self.input_type.iter().try_for_each(|t| visit.call(t))?;
        self.output_type.iter().try_for_each(|t| visit.call(t))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A runnable with a config, call arguments and types of its own (`with_config`, `bind`,
/// `with_types`), like langchain_core's `RunnableBinding`.
#[pyclass(frozen, subclass, extends = Runnable, module = "fastlcel", name = "Binding")]
pub(crate) struct Binding;

impl Binding {
    pub(crate) fn make(py: Python<'_>, node: BindingNode) -> PyResult<Py<Runnable>> {
        Runnable::create(py, node, Binding, None)
    }

    fn node<'a>(slf: &'a Bound<'_, Self>) -> PyResult<&'a BindingNode> {
        Runnable::node_as(slf.as_super())
    }
}

/// A dict argument (`None`: a new empty one); `what` names it in errors.
fn dict_arg<'py>(
    py: Python<'py>,
    value: Option<&Bound<'py, PyAny>>,
    what: &str,
) -> PyResult<Bound<'py, PyDict>> {
    match value.filter(|v| !v.is_none()) {
        None => Ok(PyDict::new(py)),
        Some(v) => match v.cast::<PyDict>() {
            Ok(d) => d.copy(),
            Err(_) => Err(type_error(format!(
                "Binding {what} must be a dict; got {}",
                describe(v)
            ))),
        },
    }
}

#[pymethods]
impl Binding {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = "(*, bound, kwargs=None, config=None, config_factories=None, custom_input_type=None, custom_output_type=None, name=None)")]
    fn py_new(
        cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<pyo3::PyClassInitializer<Self>> {
        Ok(Runnable::blank_of(cls, &Self::type_object(cls.py()))?.add_subclass(Binding))
    }

    /// langchain_core's `RunnableBinding(bound=..., kwargs=..., config=...)`.
    #[pyo3(signature = (
        *,
        bound,
        kwargs=None,
        config=None,
        config_factories=None,
        custom_input_type=None,
        custom_output_type=None,
        name=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn __init__(
        slf: &Bound<'_, Self>,
        bound: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyAny>>,
        config: Option<&Bound<'_, PyAny>>,
        config_factories: Option<&Bound<'_, PyAny>>,
        custom_input_type: Option<&Bound<'_, PyAny>>,
        custom_output_type: Option<&Bound<'_, PyAny>>,
        name: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let name = crate::validate::name(name, "Binding(name)")?;
        let py = slf.py();
        let config = dict_arg(py, config, "config")?;
        RunConfig::parse(Some(config.as_any()))?; // validates
        let factories = match config_factories.filter(|f| !f.is_none()) {
            None => PyList::empty(py),
            Some(f) => {
                let list = PyList::new(py, f.try_iter()?.collect::<PyResult<Vec<_>>>()?)?;
                if let Some(bad) = list.iter().find(|f| !f.is_callable()) {
                    return Err(type_error(format!(
                        "Binding config_factories must hold functions of the config; got {}",
                        describe(&bad)
                    )));
                }
                list
            }
        };
        let node = BindingNode {
            bound: Step::coerce(bound, "Binding bound")?,
            config: config.unbind(),
            kwargs: dict_arg(py, kwargs, "kwargs")?.unbind(),
            config_factories: factories.unbind(),
            input_type: custom_input_type
                .filter(|t| !t.is_none())
                .map(|t| t.clone().unbind()),
            output_type: custom_output_type
                .filter(|t| !t.is_none())
                .map(|t| t.clone().unbind()),
        };
        Runnable::set_node(slf.as_super(), node, name)
    }

    /// The runnable that is bound.
    #[getter]
    fn bound(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Ok(Self::node(slf)?.bound.object(slf.py()))
    }

    #[getter]
    fn config(slf: &Bound<'_, Self>) -> PyResult<Py<PyDict>> {
        Ok(Self::node(slf)?.config.clone_ref(slf.py()))
    }

    #[getter]
    fn kwargs(slf: &Bound<'_, Self>) -> PyResult<Py<PyDict>> {
        Ok(Self::node(slf)?.kwargs.clone_ref(slf.py()))
    }

    #[getter]
    fn config_factories(slf: &Bound<'_, Self>) -> PyResult<Py<PyList>> {
        Ok(Self::node(slf)?.config_factories.clone_ref(slf.py()))
    }

    #[getter]
    fn custom_input_type(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        Ok(Self::node(slf)?
            .input_type
            .as_ref()
            .map(|t| t.clone_ref(py)))
    }

    #[getter]
    fn custom_output_type(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        Ok(Self::node(slf)?
            .output_type
            .as_ref()
            .map(|t| t.clone_ref(py)))
    }

    /// Other attributes are the bound runnable's, a method taking a config getting the
    /// binding's merged in (as langchain_core's RunnableBinding: `model.bind(...).model_name`).
    fn __getattr__<'py>(slf: &Bound<'py, Self>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        Runnable::wrapped_getattr(slf.as_super(), name, "binding_getattr")
    }
}
