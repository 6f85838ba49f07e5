//! DynamoDB adapters (being written).
