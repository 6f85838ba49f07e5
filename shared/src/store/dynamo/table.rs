//! Creating the table, for tests and the local runner (moto); in AWS, `template.yaml` does.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};

use super::item::{build_err, unavailable};
use super::{GSI1, GSI2};
use crate::store::StoreError;

/// Creates the table exactly as `template.yaml` does (on-demand, `pk`/`sk`, `gsi1` projecting
/// ALL, `gsi2` keys only, TTL on `expires_at`); an existing table is fine. For tests and the local runner (moto).
pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(build_err)
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(build_err)
    };
    let gsi = GlobalSecondaryIndex::builder()
        .index_name(GSI1)
        .key_schema(key("gsi1pk", KeyType::Hash)?)
        .key_schema(key("gsi1sk", KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(build_err)?;
    let unsent = GlobalSecondaryIndex::builder()
        .index_name(GSI2)
        .key_schema(key("gsi2pk", KeyType::Hash)?)
        .key_schema(key("gsi2sk", KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::KeysOnly)
                .build(),
        )
        .build()
        .map_err(build_err)?;
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .attribute_definitions(attr("gsi1pk")?)
        .attribute_definitions(attr("gsi1sk")?)
        .attribute_definitions(attr("gsi2pk")?)
        .attribute_definitions(attr("gsi2sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .global_secondary_indexes(gsi)
        .global_secondary_indexes(unsent)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e) => match e.into_service_error() {
            CreateTableError::ResourceInUseException(_) => {}
            other => return Err(unavailable(format!("create table {table}"), other)),
        },
    }
    wait_active(client, table).await?;

    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| unavailable(format!("describe TTL of {table}"), e))?;
    let enabled = ttl
        .time_to_live_description()
        .and_then(|d| d.attribute_name())
        == Some("expires_at");
    if !enabled {
        let spec = TimeToLiveSpecification::builder()
            .attribute_name("expires_at")
            .enabled(true)
            .build()
            .map_err(build_err)?;
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(spec)
            .send()
            .await
            .map_err(|e| unavailable(format!("enable TTL on {table}"), e))?;
    }
    Ok(())
}

/// Polls until the table is ACTIVE (moto: at once; AWS: seconds).
async fn wait_active(client: &Client, table: &str) -> Result<(), StoreError> {
    for _ in 0..240 {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| unavailable(format!("describe table {table}"), e))?;
        if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(StoreError::Invalid(format!(
        "table {table} did not become ACTIVE within 60 s"
    )))
}
