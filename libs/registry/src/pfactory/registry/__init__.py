"""Model registry: version records, artifact stores, version indexes and safe model serialisation."""
