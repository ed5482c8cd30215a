"""The researcher's report: figures (`figures`), the statistics and verdict computed from the metrics (`stats`),
and the markdown document that puts them together (`document`). Nothing here reads params.yaml or knows DVC."""
