//! Tests of the HubSpot fake.
