"""Reading OSCAR FDL files and service JSON into `ServiceSpec`s, with errors that name the field.

An FDL file looks like::

    functions:
      oscar:
      - my-cluster:
          name: plants
          image: ai4oshub/plants-classification
          script: script.sh          # a path relative to the FDL file
    storage_providers: {...}          # optional, shared by the file's services
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sluice.errors import SpecError
from sluice.spec.code import pack_code
from sluice.spec.service import ServiceSpec

FDL_TOP_LEVEL = ("functions", "storage_providers", "clusters")
TRAILING_BLANKS = re.compile(r"[ \t]+$", re.MULTILINE)


def load_yaml(text: str, source: str) -> Any:
    """YAML to Python objects; a syntax error names the line and column.

    Trailing tabs, which Go's YAML parser (oscar-cli) accepts and PyYAML does not, are forgiven.
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        relaxed = TRAILING_BLANKS.sub("", text)
        if relaxed == text:
            return _explain_yaml_error(text, source)
        try:
            return yaml.safe_load(relaxed)
        except yaml.YAMLError:
            return _explain_yaml_error(text, source)


def _explain_yaml_error(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise SpecError([f"invalid YAML at {where}: {exc.problem}"], source) from None
    except yaml.YAMLError as exc:
        raise SpecError([f"invalid YAML: {exc}"], source) from None


def parse_service(data: Any, source: str = "service") -> ServiceSpec:
    """Validate one service (a dict as the API receives it, script content inline)."""
    if not isinstance(data, dict):
        raise SpecError([f"a service must be a mapping of fields, got {type(data).__name__}"], source)
    try:
        return ServiceSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(describe_errors(exc, ServiceSpec), source) from None


def parse_fdl(text: str, base_dir: Path | None = None, source: str = "FDL") -> list[ServiceSpec]:
    """Parse a whole FDL file. `script` paths are read relative to `base_dir`."""
    document = load_yaml(text, source)
    if not isinstance(document, dict) or "functions" not in document:
        raise SpecError(["an FDL file needs a top-level 'functions:' mapping"], source)
    unknown = [k for k in document if k not in FDL_TOP_LEVEL]
    if unknown:
        raise SpecError([_unknown_field(k, FDL_TOP_LEVEL, "") for k in unknown], source)
    functions = document["functions"] or {}
    entries = functions.get("oscar") if isinstance(functions, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SpecError(["'functions.oscar' must be a non-empty list of services"], source)
    shared_providers = document.get("storage_providers") or {}
    services = []
    for index, entry in enumerate(entries):
        where = f"functions.oscar[{index}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise SpecError([f"{where}: each entry is a one-key map '<cluster-id>: {{service}}'"], source)
        ((cluster_id, fields),) = entry.items()
        if not isinstance(fields, dict):
            raise SpecError([f"{where}.{cluster_id}: must be a mapping of service fields"], source)
        fields = dict(fields)
        if "script" in fields and base_dir is not None:
            fields["script"] = _read_script(
                base_dir, fields["script"], f"{where}.{cluster_id}.script", source
            )
        if isinstance(fields.get("code"), str) and base_dir is not None:
            fields["code"] = _pack(base_dir, fields["code"], f"{where}.{cluster_id}.code", source)
        if shared_providers and not fields.get("storage_providers"):
            fields["storage_providers"] = shared_providers
        fields.setdefault("cluster_id", str(cluster_id))
        services.append(parse_service(fields, f"{source} {where}"))
    return services


def _pack(base_dir: Path, value: str, where: str, source: str) -> str:
    try:
        return pack_code((base_dir / value).resolve())
    except (OSError, ValueError) as exc:
        raise SpecError([f"{where}: {exc}"], source) from None


def _read_script(base_dir: Path, value: Any, where: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SpecError([f"{where}: must be the path of a script file"], source)
    path = (base_dir / value).resolve()
    try:
        return path.read_text()
    except FileNotFoundError:
        raise SpecError(
            [f"{where}: script file '{value}' not found (looked in {base_dir})"], source
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"{where}: cannot read script '{value}': {exc}"], source) from None


def describe_errors(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """pydantic errors as `input[0].path: message` lines, with 'did you mean' for typos."""
    problems = []
    for error in exc.errors():
        location = _location(error["loc"])
        if error["type"] == "extra_forbidden":
            parent = _model_at(model, error["loc"][:-1])
            known = tuple(parent.model_fields) if parent else ()
            problems.append(
                _unknown_field(
                    str(error["loc"][-1]), known, location.rsplit(".", 1)[0] if "." in location else ""
                )
            )
        elif error["type"] == "missing":
            problems.append(f"{location}: required field is missing")
        else:
            message = error["msg"].removeprefix("Value error, ")
            # A whole-service rule has no field to name: SpecError already says which service.
            problems.append(f"{location}: {message}" if error["loc"] else message)
    return problems


def _unknown_field(name: str, known: tuple[str, ...], parent: str) -> str:
    where = f"{parent}.{name}" if parent else name
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{where}: unknown field{hint}"


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "service"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Follow a pydantic error location down nested models to the one that rejected a key."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if _is_model(current) else None
        if field is None:
            return None
        current = _inner_model(field.annotation)
    return current if _is_model(current) else None


def _inner_model(annotation: Any) -> Any:
    if _is_model(annotation):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)
