"""esm: self-hosted AWS Lambda event source mappings (SQS, Kinesis, DynamoDB Streams)."""

__version__ = "0.1.0"
