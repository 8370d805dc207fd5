"""Handlers for policy extensions (docs/policies.md §9) that the engine dispatches records to.

`s3_dump` implements `com.usetero/s3-dump`: selected records are batched as NDJSON
(`batching`) and uploaded to an S3-compatible bucket by a background thread.
"""
