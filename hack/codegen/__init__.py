"""gpuctl's OpenAPI code generator (run with `make generate`; see docs/codegen.md).

Two stages, both deterministic:

1. `specs`: the upstream specs in `hack/openapi/` -> OpenAPI 3.0 specs in each
   cloud's `_generated/` package (3.1 specs are down-converted with the pinned
   `@apiture/openapi-down-convert`, then patched where 3.0 cannot express them).
2. `clients`: those 3.0 specs -> `models*.py` (attrs classes and a cattrs
   converter) and `operations*.py` (one async function per selected operation).
"""
