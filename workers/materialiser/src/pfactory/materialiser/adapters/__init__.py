"""Adapters: one module per external system (Spark, EMR on EKS, Great Expectations, partition stores)."""
