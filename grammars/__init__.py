"""The .graph grammar, installed as the package `graphc.grammars` (see pyproject.toml)."""
