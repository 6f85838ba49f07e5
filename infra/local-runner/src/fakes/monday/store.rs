//! What the Monday.com fake holds: boards with their columns (and status labels), items with
//! their stored column values, updates, and board webhooks.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::columns::Stored;

#[derive(Clone, Debug)]
pub struct Column {
    pub id: String,
    pub title: String,
    /// `text`, `status`, `date`, ... as `columns { type }` answers.
    pub kind: String,
    /// Status labels (index, label) and dropdown labels (id, label).
    pub labels: Vec<(u64, String)>,
    /// For `board_relation`: the boards it links to.
    pub linked_boards: Vec<u64>,
}

impl Column {
    pub fn new(id: &str, title: &str, kind: &str) -> Self {
        let labels = if kind == "status" {
            // A new status column's labels on Monday.
            vec![
                (0, "Working on it".into()),
                (1, "Done".into()),
                (2, "Stuck".into()),
            ]
        } else {
            Vec::new()
        };
        Self {
            id: id.into(),
            title: title.into(),
            kind: kind.into(),
            labels,
            linked_boards: Vec::new(),
        }
    }

    /// `columns { settings }` as JSON (`settings_str` is its text).
    pub fn settings(&self) -> Value {
        match self.kind.as_str() {
            "status" => {
                json!({"labels": self.labels.iter().map(|(i, l)| (i.to_string(), Value::String(l.clone()))).collect::<serde_json::Map<_, _>>()})
            }
            "dropdown" => {
                json!({"labels": self.labels.iter().map(|(i, l)| json!({"id": i, "name": l})).collect::<Vec<_>>()})
            }
            "board_relation" => json!({"boardIds": self.linked_boards}),
            _ => json!({}),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Board {
    pub id: u64,
    pub name: String,
    pub columns: Vec<Column>,
}

impl Board {
    pub fn column(&self, id: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.id == id)
    }
}

#[derive(Clone, Debug)]
pub struct Item {
    pub id: u64,
    pub board: u64,
    pub name: String,
    pub group: String,
    pub values: BTreeMap<String, Stored>,
    /// When each value last changed (epoch ms), for `changed_at`.
    pub changed_ms: BTreeMap<String, i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The search index has this item's current values from this time on (its lag).
    pub indexed_ms: i64,
    /// The values the search index holds (those of the last write it has caught up with).
    pub indexed: BTreeMap<String, String>,
    pub creator_id: u64,
    pub deleted: bool,
}

#[derive(Clone, Debug)]
pub struct Update {
    pub id: u64,
    pub item: u64,
    pub body: String,
    pub text_body: String,
    pub created_ms: i64,
    pub creator_id: u64,
    pub parent_id: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Webhook {
    pub id: u64,
    pub board: u64,
    pub url: String,
    pub event: String,
    pub config: Value,
    /// Created with an app's token: its deliveries carry a JWT.
    pub signed: bool,
}

#[derive(Default)]
pub struct Store {
    pub boards: BTreeMap<u64, Board>,
    pub items: BTreeMap<u64, Item>,
    pub updates: BTreeMap<u64, Update>,
    pub webhooks: BTreeMap<u64, Webhook>,
    next_board: u64,
    next_item: u64,
    next_update: u64,
    next_webhook: u64,
}

impl Store {
    pub fn new() -> Self {
        // Ids beyond 32 bits, as Monday's are.
        Self {
            next_board: 4_100_000_001,
            next_item: 5_200_000_001,
            next_update: 6_300_000_001,
            next_webhook: 70_000_001,
            ..Self::default()
        }
    }

    pub fn add_board(&mut self, name: &str) -> u64 {
        let id = self.next_board;
        self.next_board += 1;
        self.boards.insert(
            id,
            Board {
                id,
                name: name.into(),
                columns: vec![Column::new("name", "Name", "name")],
            },
        );
        id
    }

    pub fn next_item_id(&mut self) -> u64 {
        let id = self.next_item;
        self.next_item += 1;
        id
    }

    pub fn next_update_id(&mut self) -> u64 {
        let id = self.next_update;
        self.next_update += 1;
        id
    }

    pub fn next_webhook_id(&mut self) -> u64 {
        let id = self.next_webhook;
        self.next_webhook += 1;
        id
    }

    pub fn live_item(&self, id: u64) -> Option<&Item> {
        self.items.get(&id).filter(|i| !i.deleted)
    }

    /// Items of `board` whose indexed `column` is one of `values` (exact match, as the search
    /// index holds them at `now_ms`).
    pub fn search(&self, board: u64, rules: &[(String, Vec<String>)], now_ms: i64) -> Vec<u64> {
        self.items
            .values()
            .filter(|i| i.board == board && !i.deleted && i.indexed_ms <= now_ms)
            .filter(|i| {
                rules.iter().all(|(col, vals)| {
                    let have = if col == "name" {
                        Some(&i.name)
                    } else {
                        i.indexed.get(col)
                    };
                    have.is_some_and(|h| vals.iter().any(|v| v == h))
                })
            })
            .map(|i| i.id)
            .collect()
    }
}
