"""Define checks of emitted manifests and Helm values against the pinned k8s reference data.

The reference data (../shared/k8s-reference, see its README.md and SOURCES.md) holds byte-for-byte copies
of upstream CRDs and Helm chart defaults at the versions the platform pins. Built-in Kubernetes objects are
checked with kubernetes-validate's bundled strict schemas instead.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

import jsonschema
import kubernetes_validate
import pytest
import yaml

REFERENCE_ENV_VAR = "K8S_REFERENCE"

# API groups served by kube-apiserver itself ("" is the core group of apiVersion "v1"). Matched exactly, so
# gateway.networking.k8s.io (a CRD) is not mistaken for networking.k8s.io.
BUILTIN_API_GROUPS = frozenset(
    {
        "",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "apps",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "autoscaling",
        "batch",
        "certificates.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "flowcontrol.apiserver.k8s.io",
        "networking.k8s.io",
        "node.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "resource.k8s.io",
        "scheduling.k8s.io",
        "storage.k8s.io",
    }
)

# Values keys holding free-form content (Kubernetes objects, arbitrary maps): anything below is accepted.
FREE_FORM_VALUES_KEYS = frozenset(
    {
        "additionalLabels",
        "affinity",
        "annotations",
        "commonLabels",
        "containerSecurityContext",
        "env",
        "extraArgs",
        "extraEnv",
        "extraObjects",
        "labels",
        "nodeSelector",
        "podAnnotations",
        "podLabels",
        "podSecurityContext",
        "resources",
        "securityContext",
        "tolerations",
    }
)

# (chart, dotted values path) of valid keys that values.yaml documents only in comments.
COMMENTED_KEYS = frozenset(
    {
        ("linkerd-crds", "enableHttpRoutes"),
        # values-ha.yaml settings documented only as comments in linkerd-control-plane's values.yaml.
        ("linkerd-control-plane", "destinationResources"),
        ("linkerd-control-plane", "identityResources"),
        ("linkerd-control-plane", "proxyInjectorResources"),
        ("linkerd-control-plane", "spValidatorResources"),
    }
)

# Subcharts whose values (nested under this key in the parent's values) are checked against their own
# defaults; the version comes from the parent's Chart.yaml dependencies.
SUBCHARTS: Mapping[str, tuple[str, ...]] = {
    "gpu-operator": ("node-feature-discovery",),
    "kube-prometheus-stack": ("grafana", "kube-state-metrics", "prometheus-node-exporter"),
}

# CRDs without a structural schema, validated against a Swagger definition kept next to the CRD instead:
# (group, version, kind) -> (file in the CRD's directory, definition name).
SWAGGER_SCHEMAS: Mapping[tuple[str, str, str], tuple[str, str]] = {
    ("kubeflow.org", "v1beta1", "Experiment"): ("katib-v1beta1-swagger.json", "v1beta1.Experiment"),
}

# Loose metadata check for custom resources: the API server validates ObjectMeta itself, not the CRD schema.
_METADATA_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

# Kubernetes types the Katib Swagger file references but does not define.
_SWAGGER_CORE_DEFINITIONS: Mapping[str, Mapping[str, Any]] = {
    "v1.ObjectMeta": _METADATA_SCHEMA,
    "v1.ListMeta": {"type": "object"},
    "v1.Time": {"type": "string"},
    "v1.unstructured.Unstructured": {"type": "object"},
    # Container and HTTPGetAction are only used by metricsCollectorSpec (custom collector, HTTP source).
    "v1.Container": {"type": "object"},
    "v1.HTTPGetAction": {"type": "object"},
}

_ANNOTATION_KEYS = frozenset({"description", "example", "default", "externalDocs", "nullable"})
_INLINE_FLAGS = re.compile(r"\(\?[aiLmsux]+\)")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_MAX_MESSAGE_CHARS = 300

CrdKey: TypeAlias = tuple[str, str, str]


class ReferenceMissing(RuntimeError):
    """Define the error raised when the k8s reference directory cannot be found."""


class CrdVersion(NamedTuple):
    """Define one served-or-not version of a CRD: its openAPIV3Schema, served flag and source file."""

    schema: Mapping[str, Any]
    served: bool
    path: Path


def repo_root() -> Path:
    """Return the repository root (the parent of tests/)."""
    return Path(__file__).resolve().parents[2]


def _missing_message(path: Path) -> str:
    """Return the explanation shown when the reference directory is missing."""
    return (
        f"k8s reference data not found: looked for {path} (with crds/ and charts/ inside)\n"
        "these files are the pinned upstream CRDs and Helm chart defaults listed in k8s-reference/SOURCES.md "
        "(shared next to this repository)\n"
        "to get them, clone the repositories listed in SOURCES.md at the listed commits and copy the listed "
        "paths into crds/<project>/<version>/ and charts/<chart>/<version>/ "
        "(then run sha256sum -c SHA256SUMS), "
        f"or point {REFERENCE_ENV_VAR} at an existing copy\n"
        f"the environment variable {REFERENCE_ENV_VAR} overrides the location "
        f"(default: {repo_root().parent / 'shared' / 'k8s-reference'})"
    )


def reference_dir() -> Path:
    """Return the k8s reference directory ($K8S_REFERENCE or ../shared/k8s-reference next to the repo)."""
    configured = os.environ.get(REFERENCE_ENV_VAR)
    path = Path(configured) if configured else repo_root().parent / "shared" / "k8s-reference"
    path = path.resolve()
    if not ((path / "crds").is_dir() and (path / "charts").is_dir()):
        raise ReferenceMissing(_missing_message(path))
    return path


def require_reference_dir() -> Path:
    """Return the k8s reference directory, failing (not skipping) the calling test when it is missing."""
    try:
        return reference_dir()
    except ReferenceMissing as missing:
        message = str(missing)
    # Outside the except block, so the report shows the message once rather than a chained traceback.
    pytest.fail(message, pytrace=False)


# --- built-in objects ---------------------------------------------------------------------------------------


def is_builtin(api_version: str) -> bool:
    """Return whether apiVersion belongs to an API group served by kube-apiserver itself."""
    group = api_version.rpartition("/")[0]
    return group in BUILTIN_API_GROUPS


def bundled_kubernetes_version(kubernetes_version: str) -> str:
    """Return kubernetes-validate's bundled schema version for a "1.35"-style version ("1.35.0")."""
    wanted = _major_minor(kubernetes_version)
    bundled: list[str] = sorted(set(kubernetes_validate.utils.all_versions()), key=_version_key)
    matching = [version for version in bundled if _major_minor(version) == wanted]
    if not matching:
        raise ValueError(
            f"kubernetes-validate {kubernetes_validate.__version__} bundles no schemas for kubernetes "
            f"{kubernetes_version}: bundled versions are {', '.join(bundled)}"
        )
    return matching[-1]


def validate_builtin(obj: Mapping[str, Any], kubernetes_version: str) -> list[str]:
    """Return the errors of a built-in object against kubernetes-validate's strict schemas."""
    version = bundled_kubernetes_version(kubernetes_version)
    try:
        kubernetes_validate.validate(dict(obj), version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{_describe(obj)}: {_json_path(error.path)}: {_shorten(error.message)}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [
            f"{_describe(obj)}: kubernetes {kubernetes_version} has no built-in schema for "
            f"{obj.get('apiVersion')} {obj.get('kind')}"
        ]
    return []


def validate_object(obj: Mapping[str, Any], kubernetes_version: str) -> list[str]:
    """Return the errors of any emitted object: built-in schemas for core groups, the CRDs for the rest."""
    api_version = obj.get("apiVersion")
    if isinstance(api_version, str) and is_builtin(api_version):
        return validate_builtin(obj, kubernetes_version)
    return validate_custom_resource(obj)


# --- custom resources ---------------------------------------------------------------------------------------


@functools.cache
def _crd_file_entries(path: Path) -> Mapping[CrdKey, CrdVersion]:
    """Return the (group, version, kind) entries of one CRD file."""
    entries: dict[CrdKey, CrdVersion] = {}
    with path.open(encoding="utf-8") as stream:
        documents = [doc for doc in yaml.load_all(stream, Loader=yaml.CSafeLoader) if isinstance(doc, dict)]
    for document in documents:
        if document.get("kind") != "CustomResourceDefinition":
            continue
        group = document["spec"]["group"]
        kind = document["spec"]["names"]["kind"]
        for version in document["spec"]["versions"]:
            key = (group, version["name"], kind)
            schema = version.get("schema", {}).get("openAPIV3Schema", {})
            entry_path = path
            if key in SWAGGER_SCHEMAS:
                file_name, definition = SWAGGER_SCHEMAS[key]
                entry_path = path.parent / file_name
                schema = _swagger_schema(entry_path, definition)
            entries[key] = CrdVersion(schema=schema, served=bool(version.get("served")), path=entry_path)
    return entries


def _swagger_schema(path: Path, definition: str) -> Mapping[str, Any]:
    """Return a schema that refers to one definition of a Swagger 2.0 file."""
    if not path.is_file():
        raise ReferenceMissing(f"{path} is missing: {definition} stands in for a CRD without a schema")
    with path.open(encoding="utf-8") as stream:
        definitions: dict[str, Any] = json.load(stream)["definitions"]
    return {"$ref": f"#/definitions/{definition}", "definitions": definitions}


@functools.cache
def _crd_files_at(reference: Path) -> Mapping[CrdKey, Path]:
    """Return the CRD file of every (group, version, kind) under one reference directory."""
    files: dict[CrdKey, Path] = {}
    for path in sorted((reference / "crds").rglob("*.yaml")):
        for key in _crd_file_entries(path):
            if not path.name.startswith(f"{key[0]}_"):
                raise ValueError(f"{path} defines {key[0]} {key[2]}: name the file {key[0]}_<plural>.yaml")
            if key in files:
                raise ValueError(f"{'/'.join(key)} is defined twice: in {files[key]} and {path}")
            files[key] = path
    return files


@functools.cache
def _crd_index_at(reference: Path) -> Mapping[CrdKey, CrdVersion]:
    """Return every CRD version found under one reference directory."""
    return {key: _crd_file_entries(path)[key] for key, path in _crd_files_at(reference).items()}


def crd_index() -> Mapping[CrdKey, CrdVersion]:
    """Return the CRD index, (group, version, kind) -> CrdVersion, loaded once per reference directory."""
    return _crd_index_at(reference_dir())


def _group_files(group: str) -> list[Path]:
    """Return the CRD files of one API group."""
    # The layout names files <group>_<plural>.yaml (crd_index() enforces it), so a look-up parses a few files
    # instead of all 14 MB of CRDs.
    return sorted((reference_dir() / "crds").glob(f"*/*/{group}_*.yaml"))


def _crd_file(key: CrdKey) -> Path | None:
    """Return the CRD file that defines (group, version, kind), or None."""
    return next((path for path in _group_files(key[0]) if key in _crd_file_entries(path)), None)


def find_crd(api_version: str, kind: str) -> CrdVersion | None:
    """Return the CRD version for apiVersion and kind, or None when the reference has no such CRD."""
    key = _crd_key(api_version, kind)
    path = _crd_file(key)
    return None if path is None else _crd_file_entries(path)[key]


def validate_custom_resource(obj: Mapping[str, Any]) -> list[str]:
    """Return the errors of a custom resource against the openAPIV3Schema of its pinned CRD."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [f"{_describe(obj)}: apiVersion and kind must be strings"]
    key = _crd_key(api_version, kind)
    path = _crd_file(key)
    if path is None:
        known = sorted({f"{g}/{v} {k}" for p in _group_files(key[0]) for g, v, k in _crd_file_entries(p)})
        close = difflib.get_close_matches(f"{api_version} {kind}", known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return [f"{_describe(obj)}: no CRD in k8s-reference for {api_version} {kind}{hint}"]
    if not _crd_file_entries(path)[key].served:
        return [f"{_describe(obj)}: {api_version} {kind} is not served by {_relative(path)}"]
    validator = _crd_validator(path, key)
    return [f"{_describe(obj)}: {message}" for message in _schema_messages(validator, obj)]


def _crd_key(api_version: str, kind: str) -> CrdKey:
    """Return the (group, version, kind) key of an apiVersion and kind."""
    group, _, version = api_version.rpartition("/")
    return (group, version, kind)


@functools.cache
def _crd_validator(path: Path, key: CrdKey) -> Any:
    """Return a JSON Schema validator for one CRD version, built once."""
    entry = _crd_file_entries(path)[key]
    schema = openapi_to_json_schema(entry.schema)
    if "definitions" in schema:
        definitions: dict[str, Any] = schema["definitions"]
        definitions.update(_SWAGGER_CORE_DEFINITIONS)
        _check_references(definitions, entry.path)
    else:
        # Every object may carry apiVersion, kind and metadata, whether the CRD declares them or not
        # (Linkerd's CRDs declare only spec).
        schema.setdefault("properties", {}).update(
            apiVersion={"type": "string"}, kind={"type": "string"}, metadata=_METADATA_SCHEMA
        )
    # OpenAPI 3.0 schema objects follow JSON Schema draft 4/5 (boolean exclusiveMinimum, for example).
    return jsonschema.Draft4Validator(schema)


def _check_references(definitions: Mapping[str, Any], path: Path) -> None:
    """Raise when a Swagger definition refers to a type that is neither defined nor substituted."""
    missing = sorted({ref.removeprefix("#/definitions/") for ref in _references(definitions)} - set(definitions))
    if missing:
        raise ValueError(
            f"{path} refers to undefined types {', '.join(missing)}: add them to _SWAGGER_CORE_DEFINITIONS"
        )


def _references(node: Any) -> Iterator[str]:
    """Return every $ref below a schema node."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def openapi_to_json_schema(node: Mapping[str, Any], *, structural: bool = True) -> dict[str, Any]:
    """Return the JSON Schema equivalent of an OpenAPI v3 CRD schema (or Swagger 2.0 definition) node.

    Args:
        structural: whether the node describes fields (True) or is a branch of anyOf/allOf/oneOf/not, which
            may only constrain values; only structural objects reject unknown fields. Defaults to True.
    """
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _ANNOTATION_KEYS or key.startswith("x-kubernetes-"):
            continue
        if key in ("properties", "definitions"):
            out[key] = {name: openapi_to_json_schema(sub, structural=structural) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, Mapping):
            out[key] = openapi_to_json_schema(value, structural=structural and key != "not")
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [openapi_to_json_schema(branch, structural=False) for branch in value]
        elif key == "pattern":
            out[key] = _python_pattern(value)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string") or node.get("format") == "int-or-string":
        out["type"] = ["integer", "string"]
    properties: Mapping[str, Any] = node.get("properties", {})
    if "required" in out:
        # The API server defaults before it validates, so a required field that has a default may be omitted.
        required = [name for name in out["required"] if "default" not in properties.get(name, {})]
        if required:
            out["required"] = required
        else:
            del out["required"]
    if (
        structural
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        # The API server silently prunes fields a structural schema does not declare: report them instead.
        out["additionalProperties"] = False
    if node.get("nullable"):
        out = _allow_null(out)
    return out


def _allow_null(schema: dict[str, Any]) -> dict[str, Any]:
    """Return the schema extended to accept null."""
    if any(key in schema for key in ("anyOf", "allOf", "oneOf", "not")):
        return {"anyOf": [{"type": "null"}, schema]}
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        schema["type"] = [*types, "null"]
    if "enum" in schema:
        schema["enum"] = [*schema["enum"], None]
    return schema


def _python_pattern(pattern: str) -> str:
    """Return a Go (RE2) pattern in a form Python's re accepts (inline flags must lead)."""
    try:
        re.compile(pattern)
    except re.error:
        # Upstream writes "^(?i)(abort|warn)?$"; RE2 applies the flag from there on, Python only at the start.
        moved = "".join(_INLINE_FLAGS.findall(pattern)) + _INLINE_FLAGS.sub("", pattern)
        re.compile(moved)
        return moved
    return pattern


# --- Helm values --------------------------------------------------------------------------------------------


def pinned_chart_versions() -> dict[str, str]:
    """Return chart name -> the single version directory present under charts/."""
    pins: dict[str, str] = {}
    for chart_dir in sorted(p for p in (reference_dir() / "charts").iterdir() if p.is_dir()):
        versions = sorted(p.name for p in chart_dir.iterdir() if p.is_dir())
        if len(versions) != 1:
            raise ValueError(
                f"charts/{chart_dir.name} holds {len(versions)} version directories ({', '.join(versions)}): "
                "keep exactly one, the pin"
            )
        pins[chart_dir.name] = versions[0]
    return pins


@functools.cache
def _load_yaml(path: Path) -> Any:
    """Return the parsed content of a YAML file (shared: do not mutate)."""
    with path.open(encoding="utf-8") as stream:
        return yaml.load(stream, Loader=yaml.CSafeLoader)


@functools.cache
def _values_validator(path: Path) -> Any:
    """Return a validator for a chart's values.schema.json, using the draft its $schema names."""
    with path.open(encoding="utf-8") as stream:
        schema = json.load(stream)
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return validator_class(schema)


def _chart_defaults(chart_dir: Path) -> Mapping[str, Any]:
    """Return a chart's values.yaml defaults ({} for an empty file)."""
    defaults = _load_yaml(chart_dir / "values.yaml")
    return defaults if isinstance(defaults, Mapping) else {}


class _Subchart(NamedTuple):
    """Define a subchart's name, version and reference directory."""

    name: str
    version: str
    directory: Path


def _subcharts(chart: str, chart_dir: Path) -> tuple[dict[str, _Subchart], list[str]]:
    """Return the checked subcharts of a chart by values key, and errors for those without reference data."""
    wanted = SUBCHARTS.get(chart, ())
    if not wanted:
        return {}, []
    metadata = _load_yaml(chart_dir / "Chart.yaml") or {}
    found: dict[str, _Subchart] = {}
    errors: list[str] = []
    label = f"{chart} {chart_dir.name}"
    for dependency in metadata.get("dependencies") or []:
        key = dependency.get("alias") or dependency["name"]
        if key not in wanted:
            continue
        directory = chart_dir.parent.parent / dependency["name"] / str(dependency["version"])
        if not directory.is_dir():
            errors.append(
                f"{label}: subchart {dependency['name']} {dependency['version']} (from Chart.yaml) "
                f"has no reference directory {_relative(directory)}"
            )
            continue
        found[key] = _Subchart(dependency["name"], str(dependency["version"]), directory)
    return found, errors


def validate_helm_values(chart: str, version: str, values: Mapping[str, Any]) -> list[str]:
    """Return the errors of Helm values against the pinned chart's defaults and values.schema.json."""
    chart_dir = reference_dir() / "charts" / chart / version
    label = f"{chart} {version}"
    if not (chart_dir / "values.yaml").is_file():
        pinned = ", ".join(sorted(p.name for p in chart_dir.parent.glob("*") if p.is_dir())) or "nothing"
        return [f"{label}: no reference data at charts/{chart}/{version} (k8s-reference pins {pinned})"]
    defaults = _chart_defaults(chart_dir)
    subcharts, errors = _subcharts(chart, chart_dir)

    own_values = {key: value for key, value in values.items() if key not in subcharts}
    errors += _missing_keys(own_values, defaults, (), _commented_paths(chart), label, "the chart's values.yaml")
    merged = _deep_merge(defaults, values)
    schema_path = chart_dir / "values.schema.json"
    if schema_path.is_file():
        validator = _values_validator(schema_path)
        errors += [f"{label}: values.schema.json: {line}" for line in _schema_messages(validator, merged)]

    for key, subchart in subcharts.items():
        # Helm coalesces the parent's section over the subchart's own defaults.
        parent_section = defaults.get(key)
        sub_defaults = _deep_merge(
            _chart_defaults(subchart.directory), parent_section if isinstance(parent_section, Mapping) else {}
        )
        section = values.get(key)
        if isinstance(section, Mapping):
            commented = {f"{key}.{path}" for path in _commented_paths(subchart.name)}
            where = f"subchart {subchart.name} {subchart.version}'s values.yaml or the chart's {key} section"
            errors += _missing_keys(section, sub_defaults, (key,), commented, label, where)
        sub_schema_path = subchart.directory / "values.schema.json"
        merged_section = merged.get(key)
        if sub_schema_path.is_file() and isinstance(merged_section, Mapping):
            validator = _values_validator(sub_schema_path)
            sub_values = _deep_merge(_chart_defaults(subchart.directory), merged_section)
            errors += [
                f"{label}: subchart {subchart.name} {subchart.version} values.schema.json: {key}.{line}"
                for line in _schema_messages(validator, sub_values)
            ]
    return errors


def _commented_paths(chart: str) -> set[str]:
    """Return the dotted values paths COMMENTED_KEYS allows for one chart."""
    return {path for name, path in COMMENTED_KEYS if name == chart}


def _missing_keys(
    values: Mapping[str, Any],
    defaults: Mapping[str, Any],
    path: tuple[str, ...],
    commented: set[str],
    label: str,
    where: str,
) -> list[str]:
    """Return an error for every values key path that the defaults do not have."""
    errors: list[str] = []
    for raw_key, value in values.items():
        key = str(raw_key)
        key_path = (*path, key)
        dotted = ".".join(key_path)
        if dotted in commented:
            continue
        if key not in defaults:
            close = difflib.get_close_matches(key, [str(k) for k in defaults], n=1)
            hint = f" (did you mean {'.'.join((*path, close[0]))}?)" if close else ""
            errors.append(f"{label}: values key {dotted} does not exist in {where}{hint}")
            continue
        default = defaults[key]
        if key in FREE_FORM_VALUES_KEYS or default is None or not isinstance(value, Mapping) or not value:
            continue
        if isinstance(default, Mapping):
            if default:  # an empty map in the defaults is free-form
                errors += _missing_keys(value, default, key_path, commented, label, where)
        elif not isinstance(default, list):
            below = ", ".join(str(k) for k in value)
            errors.append(
                f"{label}: values key {dotted} is not a map in {where} (default {default!r}): "
                f"{below} below it cannot exist"
            )
    return errors


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return base with override merged in the way Helm coalesces values (maps merge, null deletes)."""
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = _deep_merge(current, value)
        else:
            merged[key] = value
    return merged


# --- shared helpers -----------------------------------------------------------------------------------------


def _schema_messages(validator: Any, instance: Any) -> list[str]:
    """Return readable "<json path>: <message>" lines for every schema violation of an instance."""
    messages: list[str] = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path]):
        path = list(error.absolute_path)
        if error.validator == "additionalProperties" and error.validator_value is False:
            declared = list(error.schema.get("properties", {}))
            patterns = list(error.schema.get("patternProperties", {}))
            for field in sorted(error.instance):
                if field in declared or any(re.search(p, field) for p in patterns):
                    continue
                close = difflib.get_close_matches(field, declared, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                messages.append(f"{_json_path([*path, field])}: unknown field{hint}")
        else:
            messages.append(f"{_json_path(path)}: {_shorten(error.message)}")
    return messages


def _json_path(path: Iterable[Any]) -> str:
    """Return a readable JSON path such as spec.containers[0].image or metadata.labels["app.k8s.io/name"]."""
    rendered = ""
    for part in path:
        if isinstance(part, int):
            rendered += f"[{part}]"
        elif _PLAIN_KEY.match(str(part)):
            rendered += f".{part}" if rendered else str(part)
        else:
            rendered += f'["{part}"]'
    return rendered or "(root)"


def _describe(obj: Mapping[str, Any]) -> str:
    """Return "<kind>/<name>" for an object."""
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return f"{obj.get('kind', '<no kind>')}/{name or '<no name>'}"


def _shorten(message: str) -> str:
    """Return a message cut to a readable length."""
    return message if len(message) <= _MAX_MESSAGE_CHARS else message[: _MAX_MESSAGE_CHARS - 3] + "..."


def _relative(path: Path) -> str:
    """Return a path relative to the reference directory when it is inside it."""
    try:
        return str(path.relative_to(reference_dir()))
    except ValueError:
        return str(path)


def _major_minor(version: str) -> str:
    """Return "1.35" for "1.35", "v1.35.2" or "1.35.0"."""
    parts = version.removeprefix("v").split(".")
    if len(parts) < 2 or not all(part.isdigit() for part in parts[:2]):
        raise ValueError(f"kubernetes version {version} is not of the form 1.35: use major.minor")
    return ".".join(parts[:2])


def _version_key(version: str) -> tuple[int, ...]:
    """Return a sort key for a dotted numeric version."""
    return tuple(int(part) for part in version.split(".") if part.isdigit())
