//! SQS adapter (being written).
