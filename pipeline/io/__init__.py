"""Input and output: shard discovery and the range reader, image sizes, Parquet, dead-letter and
BigQuery sinks, Cloud Storage notifications, run locks and provisioning. Imports from core and
config."""
