"""The pipeline's thin glue: params.yaml, the `dcv` CLI, and one module per DVC stage calling the `dcv` library."""
