"""langchain_core's introspection API on fastlcel runnables: types and schemas, config specs,
graphs, prompts, tools, configurable alternatives and serialization.

Glue to langchain_core and pydantic, installed on the classes when fastlcel is imported and
importing langchain_core only when one of these methods is called (they return its objects).

What a step's types are is decided in one place, langchain_core itself: each fastlcel class has
a langchain_core counterpart (``Parallel`` -> ``RunnableParallel``), and its types, schemas,
config specs and graph are computed by that class's own methods, applied to the fastlcel
runnable, whose attributes carry langchain_core's names (``steps__``, ``first``, ``mapper``,
``bound``...). A method that calls ``super()`` finds the base behaviour on fastlcel's
``Runnable``, as it would on langchain_core's. So the answer is langchain_core's, for the
installed version, by construction. fastlcel's own wrappers (timeout, limits, cache) answer as
their runnable, as a langchain_core binding does.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any, get_args

from fastlcel import _core

# A fastlcel class -> its langchain_core counterpart (module, class).
_COUNTERPARTS: dict[type, tuple[str, str]] = {
    _core.Lambda: ("langchain_core.runnables.base", "RunnableLambda"),
    _core.Generator: ("langchain_core.runnables.base", "RunnableGenerator"),
    _core.Parallel: ("langchain_core.runnables.base", "RunnableParallel"),
    _core.Sequence: ("langchain_core.runnables.base", "RunnableSequence"),
    _core.Passthrough: ("langchain_core.runnables.passthrough", "RunnablePassthrough"),
    _core.Assign: ("langchain_core.runnables.passthrough", "RunnableAssign"),
    _core.Pick: ("langchain_core.runnables.passthrough", "RunnablePick"),
    _core.Branch: ("langchain_core.runnables.branch", "RunnableBranch"),
    _core.Binding: ("langchain_core.runnables.base", "RunnableBinding"),
    _core.WithFallbacks: ("langchain_core.runnables.fallbacks", "RunnableWithFallbacks"),
    _core.Retry: ("langchain_core.runnables.retry", "RunnableRetry"),
    _core.Each: ("langchain_core.runnables.base", "RunnableEach"),
}
# fastlcel's own wrappers: typed, configured and drawn as the runnable they wrap.
_WRAPPERS = (_core.Timeout, _core.Limited, _core.Cached)
# The classes langchain_core serializes (RunnableSerializable's subclasses among the above).
_SERIALIZABLE = tuple(c for c in _COUNTERPARTS if c not in (_core.Lambda, _core.Generator))


def _native(cls: type) -> type:
    """The fastlcel class ``cls`` is (or derives from)."""
    for klass in cls.__mro__:
        if klass in _COUNTERPARTS or klass in _WRAPPERS:
            return klass
    raise TypeError(f"{cls.__name__} derives from no fastlcel runnable class")


@functools.cache
def _counterpart(native: type) -> type:
    module, name = _COUNTERPARTS[native]
    __import__(module)
    return getattr(sys.modules[module], name)


@functools.cache
def _lc_bases() -> tuple[type, ...]:
    """langchain_core's base classes, whose behaviour fastlcel's ``Runnable`` has."""
    from langchain_core.load.serializable import Serializable
    from langchain_core.runnables.base import Runnable, RunnableSerializable
    from pydantic import BaseModel

    return (Runnable, RunnableSerializable, Serializable, BaseModel, object)


def _rebind(func: Callable[..., Any], cls: type) -> Callable[..., Any]:
    """``func`` (a langchain_core method) with its ``super()`` resolving from ``cls``."""
    code = func.__code__
    if "__class__" not in code.co_freevars:
        return func
    cells = func.__closure__ or ()
    closure = tuple(
        types.CellType(cls) if name == "__class__" else cell
        for name, cell in zip(code.co_freevars, cells, strict=True)
    )
    made = types.FunctionType(code, func.__globals__, func.__name__, func.__defaults__, closure)
    made.__kwdefaults__ = func.__kwdefaults__
    made.__qualname__ = func.__qualname__
    return made


def _getter(attr: Any) -> Callable[..., Any]:
    """The function behind a method, property or cached property."""
    if isinstance(attr, property):
        return attr.fget  # type: ignore[return-value]
    if isinstance(attr, functools.cached_property):
        return attr.func
    return attr  # type: ignore[no-any-return]


@functools.cache
def _impl(native: type, name: str) -> Callable[..., Any]:
    """The implementation of ``name`` (a method, or a property's getter) for ``native``:
    its langchain_core counterpart's own, else the base behaviour."""
    if native in _WRAPPERS or native is _core.Retry:
        return _AS_BOUND[name]
    if native is _core.Sequence and name in _SEQUENCE:
        return _SEQUENCE[name]
    for klass in _counterpart(native).__mro__:
        if name in vars(klass):
            if klass in _lc_bases():
                break
            return _rebind(_getter(vars(klass)[name]), native)
    return _BASE[name]


# -- the base behaviour: langchain_core's Runnable -----------------------------------------------


def _lc_runnable(name: str) -> Callable[..., Any]:
    from langchain_core.runnables.base import Runnable

    return _getter(vars(Runnable)[name])


def _declared_types(self: Any) -> tuple[Any, Any]:
    """The input and output types a class declares, as langchain_core finds them: a Python
    subclass's generic base (``class Mine(RunnableBranch[int, str])``), the alias an instance
    was made through (``RunnableBranch[int, str](...)``), else what langchain_core's class
    declares (``RunnablePick``: ``dict[str, Any]`` to ``Any``)."""
    for base in getattr(type(self), "__orig_bases__", ()):
        args = get_args(base)
        if len(args) == 2:
            return args
    args = get_args(self.__dict__.get("__orig_class__"))
    if len(args) == 2:
        return args
    native = _native(type(self))
    if native in _COUNTERPARTS:
        lc = _counterpart(native)
        for klass in lc.__mro__:
            meta = getattr(klass, "__pydantic_generic_metadata__", None) or {}
            if len(meta.get("args", ())) == 2:
                return meta["args"]
        for base in getattr(lc, "__orig_bases__", ()):
            args = get_args(base)
            if len(args) == 2:
                return args
    return Any, Any


_BASE: dict[str, Callable[..., Any]] = {
    "InputType": lambda self: _declared_types(self)[0],
    "OutputType": lambda self: _declared_types(self)[1],
    "get_input_schema": lambda self, config=None: _lc_runnable("get_input_schema")(self, config),
    "get_output_schema": lambda self, config=None: _lc_runnable("get_output_schema")(self, config),
    "config_specs": lambda self: [],
    "get_graph": lambda self, config=None: _lc_runnable("get_graph")(self, config),
}

# fastlcel's wrappers (and Retry, a binding of nothing but its runnable): as their runnable.
_AS_BOUND: dict[str, Callable[..., Any]] = {
    "InputType": lambda self: self.bound.InputType,
    "OutputType": lambda self: self.bound.OutputType,
    "get_input_schema": lambda self, config=None: self.bound.get_input_schema(config),
    "get_output_schema": lambda self, config=None: self.bound.get_output_schema(config),
    "config_specs": lambda self: self.bound.config_specs,
    "get_graph": lambda self, config=None: self.bound.get_graph(config),
}


def _lc_view(step: Any) -> Any:
    """A step as langchain_core's sequence schema code sees it: fastlcel's Assign and Pick as
    langchain_core's (it tells them apart with isinstance), around the same mapper or keys."""
    if isinstance(step, _core.Assign):
        return _counterpart(_core.Assign).model_construct(mapper=step.mapper)
    if isinstance(step, _core.Pick):
        return _counterpart(_core.Pick).model_construct(keys=step.keys)
    return step


def _sequence_schema(which: str) -> Callable[..., Any]:
    def schema(self: Any, config: Any = None) -> Any:
        from langchain_core.runnables import base

        steps = [_lc_view(step) for step in self.steps]
        return getattr(base, f"_seq_{which}_schema")(steps, config)

    return schema


# RunnableSequence's schemas come from functions of its steps, which look for RunnableAssign and
# RunnablePick (the keys an assign adds to, or a pick takes from, the schema around it).
_SEQUENCE = {
    "get_input_schema": _sequence_schema("input"),
    "get_output_schema": _sequence_schema("output"),
}


# -- the methods installed on every class ---------------------------------------------------------


def _class_methods(native: type) -> dict[str, Any]:
    """The methods of ``native`` whose behaviour its counterpart may override."""

    def input_type(self: Any) -> Any:
        """The type of the input, as langchain_core infers it."""
        return _impl(native, "InputType")(self)

    def output_type(self: Any) -> Any:
        """The type of the output, as langchain_core infers it."""
        return _impl(native, "OutputType")(self)

    def get_input_schema(self: Any, config: Any = None) -> Any:
        """A pydantic model of the input, as langchain_core infers it."""
        return _impl(native, "get_input_schema")(self, config)

    def get_output_schema(self: Any, config: Any = None) -> Any:
        """A pydantic model of the output, as langchain_core infers it."""
        return _impl(native, "get_output_schema")(self, config)

    def config_specs(self: Any) -> Any:
        """The configurable fields of this runnable and the runnables in it."""
        return _impl(native, "config_specs")(self)

    def get_graph(self: Any, config: Any = None) -> Any:
        """A langchain_core ``Graph`` of this runnable and the runnables in it."""
        return _impl(native, "get_graph")(self, config)

    return {
        "InputType": property(input_type),
        "OutputType": property(output_type),
        "get_input_schema": get_input_schema,
        "get_output_schema": get_output_schema,
        "config_specs": property(config_specs),
        "get_graph": get_graph,
    }


def _input_schema(self: Any) -> Any:
    """The input's pydantic model (``get_input_schema()``)."""
    return self.get_input_schema()


def _output_schema(self: Any) -> Any:
    """The output's pydantic model (``get_output_schema()``)."""
    return self.get_output_schema()


def get_input_jsonschema(self: Any, config: Any = None) -> dict[str, Any]:
    """The JSON schema of the input."""
    return _lc_runnable("get_input_jsonschema")(self, config)  # type: ignore[no-any-return]


def get_output_jsonschema(self: Any, config: Any = None) -> dict[str, Any]:
    """The JSON schema of the output."""
    return _lc_runnable("get_output_jsonschema")(self, config)  # type: ignore[no-any-return]


def config_schema(self: Any, *, include: Sequence[str] | None = None) -> Any:
    """A pydantic model of the config this runnable accepts."""
    return _lc_runnable("config_schema")(self, include=include)


def get_config_jsonschema(self: Any, *, include: Sequence[str] | None = None) -> dict[str, Any]:
    """The JSON schema of the config this runnable accepts."""
    return _lc_runnable("get_config_jsonschema")(self, include=include)  # type: ignore[no-any-return]


def get_prompts(self: Any, config: Any = None) -> list[Any]:
    """The prompt templates among the runnables in it."""
    return _lc_runnable("get_prompts")(self, config)  # type: ignore[no-any-return]


def as_tool(
    self: Any,
    args_schema: Any = None,
    *,
    name: str | None = None,
    description: str | None = None,
    arg_types: dict[str, type] | None = None,
) -> Any:
    """A langchain_core ``BaseTool`` that runs this runnable (langchain_core's ``as_tool``)."""
    return _lc_runnable("as_tool")(
        self, args_schema, name=name, description=description, arg_types=arg_types
    )


def _deps(self: Any) -> list[Any]:
    """The runnables a Lambda's function uses from its closure or globals (its graph and config
    specs include theirs)."""
    return _impl(_core.Lambda, "deps")(self)  # type: ignore[no-any-return]


def _merge_configs(self: Any, *configs: Any) -> Any:
    """A Binding's config merged with ``configs`` and its factories' (langchain_core's)."""
    return _impl(_core.Binding, "_merge_configs")(self, *configs)


# Observation methods a langchain_core class overrides: RunnableBinding forwards the events to
# its runnable under its merged config, RunnableEach has none.
_OWN_OBSERVATION: dict[type, tuple[str, ...]] = {
    _core.Binding: ("astream_events", "stream_events", "_astream_events_v3"),
    _core.Each: (
        "astream_events",
        "_astream_events_unsupported_v1_v2",
        "_astream_events_unsupported_v3",
        "with_listeners",
        "with_alisteners",
    ),
}


def _counterparts_own(native: type, name: str) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _impl(native, name)(self, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"langchain_core's ``{name}`` of the {native.__name__}'s counterpart."
    return method


def _generator_transform(self: Any) -> Any:
    return self.func


def _generator_atransform(self: Any) -> Any:
    return self.afunc


# -- attributes of the runnable inside ---------------------------------------------------------


def binding_getattr(self: Any, name: str) -> Any:
    """A Binding's other attributes: its runnable's, a method taking a config getting the
    binding's merged in (langchain_core's ``RunnableBinding.__getattr__``)."""
    if "langchain_core" not in sys.modules:  # then the runnable inside is not langchain_core's
        return getattr(self.bound, name)
    from langchain_core.runnables.base import RunnableBinding

    return vars(RunnableBinding)["__getattr__"](self, name)


def fallbacks_getattr(self: Any, name: str) -> Any:
    """A WithFallbacks' other attributes: its runnable's, a method that returns a runnable
    (``bind_tools``) applied to every fallback too (langchain_core's
    ``RunnableWithFallbacks.__getattr__``)."""
    attr = getattr(self.runnable, name)
    if "langchain_core" not in sys.modules or not callable(attr):
        return attr
    from langchain_core.runnables.fallbacks import _returns_runnable

    if not _returns_runnable(attr):
        return attr

    @functools.wraps(attr)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        fields = self._fields()
        fields["runnable"] = attr(*args, **kwargs)
        fields["fallbacks"] = [getattr(f, name)(*args, **kwargs) for f in self.fallbacks]
        return type(self)(**fields)

    return wrapped


# -- configurable fields and alternatives -------------------------------------------------------


def configurable_fields(self: Any, **kwargs: Any) -> Any:
    """This runnable with fields set from each call's ``configurable`` config
    (langchain_core's ``configurable_fields``)."""
    lc = _counterpart(_native(type(self)))
    for key in kwargs:
        if key not in lc.model_fields:
            raise ValueError(
                f"Configuration key {key} not found in {self}: "
                f"available keys are {lc.model_fields.keys()}"
            )
    return _configurable_fields_class().model_construct(default=self, fields=kwargs)


def configurable_alternatives(
    self: Any,
    which: Any,
    *,
    default_key: str = "default",
    prefix_keys: bool = False,
    **kwargs: Any,
) -> Any:
    """This runnable or an alternative, chosen by each call's ``configurable`` config
    (langchain_core's ``configurable_alternatives``)."""
    from langchain_core.runnables.configurable import RunnableConfigurableAlternatives

    # NOTE: model_construct: pydantic's validation of `default` (a RunnableSerializable) does
    # not accept a fastlcel runnable; what langchain_core does with it needs only a Runnable.
    return RunnableConfigurableAlternatives.model_construct(
        which=which,
        default=self,
        alternatives=kwargs,
        default_key=default_key,
        prefix_keys=prefix_keys,
    )


@functools.cache
def _configurable_fields_class() -> type:
    """langchain_core's RunnableConfigurableFields, remaking a fastlcel runnable from its
    fields (langchain_core's reads a pydantic model's ``__dict__``)."""
    from langchain_core.runnables.config import ensure_config
    from langchain_core.runnables.configurable import RunnableConfigurableFields
    from langchain_core.runnables.utils import (
        ConfigurableField,
        ConfigurableFieldMultiOption,
        ConfigurableFieldSingleOption,
    )

    class ConfigurableFields(RunnableConfigurableFields):  # type: ignore[misc]
        def _prepare(self, config: Any = None) -> Any:
            config = ensure_config(config)
            given = config.get("configurable", {})
            specs_by_id = {spec.id: (key, spec) for key, spec in self.fields.items()}
            configured = {
                specs_by_id[k][0]: v
                for k, v in given.items()
                if k in specs_by_id and isinstance(specs_by_id[k][1], ConfigurableField)
            }
            for key, spec in self.fields.items():
                if isinstance(spec, ConfigurableFieldSingleOption):
                    configured[key] = spec.options[given.get(spec.id) or spec.default]
                elif isinstance(spec, ConfigurableFieldMultiOption):
                    configured[key] = [spec.options[o] for o in given.get(spec.id, spec.default)]
            if not configured:
                return self.default, config
            return type(self.default)(**{**self.default._fields(), **configured}), config

    return ConfigurableFields


# -- langchain_core's serialization --------------------------------------------------------------


def is_lc_serializable(cls: type) -> bool:
    """Whether langchain_core serializes this class (its counterpart's answer)."""
    native = _native(cls)
    return native in _SERIALIZABLE and bool(_counterpart(native).is_lc_serializable())


def get_lc_namespace(cls: type) -> list[str]:
    """langchain_core's namespace of the counterpart class."""
    return list(_counterpart(_native(cls)).get_lc_namespace())


def lc_id(cls: type) -> list[str]:
    """The id langchain_core serializes the counterpart class under."""
    return list(_counterpart(_native(cls)).lc_id())


def to_json(self: Any) -> Any:
    """langchain_core's serialized form of the same runnable (``dumpd`` of its langchain_core
    equivalent): ``langchain_core.load.load`` (or ``loads`` of its JSON) makes a langchain_core
    runnable from it."""
    from langchain_core.load import dumpd

    return dumpd(_as_langchain(self))


def _as_langchain(obj: Any) -> Any:
    """The langchain_core runnable equivalent to ``obj``, fastlcel runnables inside replaced
    too (a fastlcel-only wrapper is kept: langchain_core writes it as not implemented)."""
    if isinstance(obj, dict):
        return {k: _as_langchain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_as_langchain(v) for v in obj)
    if not isinstance(obj, _core.Runnable):
        return obj
    native = _native(type(obj))
    if native not in _COUNTERPARTS:
        return obj
    lc = _counterpart(native)
    fields = {k: _as_langchain(v) for k, v in obj._fields().items()}
    if native not in _SERIALIZABLE:  # RunnableLambda, RunnableGenerator: plain classes
        return lc(**fields)
    return lc.model_construct(**{k: v for k, v in fields.items() if k in lc.model_fields})


# -- installation ---------------------------------------------------------------------------------


def install() -> None:
    """Installs the API on fastlcel's classes (importing nothing of langchain_core)."""
    base = _core.Runnable
    properties = ("InputType", "OutputType", "config_specs")
    for name, impl in _BASE.items():
        setattr(base, name, property(impl) if name in properties else impl)
    for name, value in {
        "input_schema": property(_input_schema),
        "output_schema": property(_output_schema),
        "get_input_jsonschema": get_input_jsonschema,
        "get_output_jsonschema": get_output_jsonschema,
        "config_schema": config_schema,
        "get_config_jsonschema": get_config_jsonschema,
        "get_prompts": get_prompts,
        "as_tool": as_tool,
    }.items():
        setattr(base, name, value)
    for native in (*_COUNTERPARTS, *_WRAPPERS):
        for name, value in _class_methods(native).items():
            setattr(native, name, value)
    for native in _SERIALIZABLE:
        native.configurable_fields = configurable_fields
        native.configurable_alternatives = configurable_alternatives
        native.is_lc_serializable = classmethod(is_lc_serializable)
        native.get_lc_namespace = classmethod(get_lc_namespace)
        native.lc_id = classmethod(lc_id)
        native.to_json = to_json
    deps = functools.cached_property(_deps)
    deps.__set_name__(_core.Lambda, "deps")
    _core.Lambda.deps = deps
    _core.Binding._merge_configs = _merge_configs
    for native, names in _OWN_OBSERVATION.items():
        for name in names:
            setattr(native, name, _counterparts_own(native, name))
    _core.Generator._transform = property(_generator_transform)
    _core.Generator._atransform = property(_generator_atransform)


def register(langchain_base: types.ModuleType) -> None:
    """Once langchain_core's runnables are loaded: fastlcel's classes are virtual subclasses of
    its ``Runnable``, so that it accepts them as steps."""
    langchain_base.Runnable.register(_core.Runnable)
