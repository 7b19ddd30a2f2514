"""Strict Kubernetes validation (kubernetes-validate) with each schema file read once per test session.

`kubernetes_validate.validate` opens and parses its JSON schema files on every call: the ~1 MB
`_definitions.json` alone is most of the ~15 ms a call costs, and the manifest tests validate several hundred
objects. Here the library's two readers are memoized (same files, same parsed schemas, same validator and
errors); nothing else of it changes, so a manifest it would refuse is still refused (test_manifests'
`test_strict_validation_is_real` is the control).
"""

from __future__ import annotations

import functools
from typing import Any

import kubernetes_validate
from kubernetes_validate import utils as _utils

K8S_VERSION = "1.33"  # kubernetes-validate ships schemas 1.25 .. 1.37; 1.33 is GKE's regular channel
ValidationError = kubernetes_validate.ValidationError

if not hasattr(_utils.schema_contents, "cache_info"):  # once, whichever test module imports this first
    # parsed schemas are only read by jsonschema/referencing, never changed: sharing them is safe
    _utils.schema_contents = functools.cache(_utils.schema_contents)
    _utils.all_versions = functools.cache(_utils.all_versions)


def validate_strictly(obj: dict[str, Any], version: str = K8S_VERSION) -> str:
    """`kubernetes_validate.validate(obj, version, strict=True)`: unknown fields are errors."""
    return kubernetes_validate.validate(obj, version, strict=True)
