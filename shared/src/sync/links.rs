//! Linking an entity's ids without merging two entities through a shared secondary id. A
//! cross-reference link joins every id given to the entity any of them already belongs to; two
//! deals with different UUIDs that share a `shortCode` (or an install id that already belongs to
//! another deal) would silently become one project. Here an id that already belongs to an entity
//! with a *different primary id* is left out of the link, and the conflict is reported (logged,
//! and named in the event's outcome detail by the caller).

use crate::error::SyncError;
use crate::store::{EntityKind, EntityLink, IdForm, IdRef, XrefStore};

/// An id that was kept out of a link because it belongs to another entity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkConflict {
    pub id: IdRef,
    /// The entity it already belongs to.
    pub other: String,
}

impl std::fmt::Display for LinkConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} already belongs to entity {}, kept apart",
            self.id, self.other
        )
    }
}

/// Links `primary` with every id of `others` that does not belong to an entity with a different
/// id of one of the `primary_forms`. `primary` must be of one of those forms.
pub async fn link_apart(
    xref: &dyn XrefStore,
    kind: EntityKind,
    primary: IdRef,
    others: Vec<IdRef>,
    primary_forms: &[IdForm],
) -> Result<(EntityLink, Vec<LinkConflict>), SyncError> {
    let mine: Vec<&IdRef> = std::iter::once(&primary)
        .chain(others.iter().filter(|id| primary_forms.contains(&id.form)))
        .collect();
    let clashes = |link: &EntityLink| {
        mine.iter()
            .any(|m| link.id(m.form).is_some_and(|v| v != m.value))
    };
    // An entity already linked by every id (the usual case, after its first event): each id
    // resolves to it, so none clashes unless the entity itself does, and linking would change
    // nothing. One lookup instead of one per id and the link's reads and write.
    if others.iter().all(|id| id.form != IdForm::Crm)
        && let Some(known) = xref.resolve(kind, &primary).await?
        && std::iter::once(&primary)
            .chain(&others)
            .all(|id| known.ids.contains(&id.key()))
        && !clashes(&known)
    {
        return Ok((known, Vec::new()));
    }
    let mut ids = vec![primary.clone()];
    let mut conflicts = Vec::new();
    for id in &others {
        let clash = match xref.resolve(kind, id).await? {
            Some(link) => clashes(&link).then_some(link.key),
            None => None,
        };
        match clash {
            Some(other) => {
                tracing::warn!(id = %id, entity = %primary, other = %other,
                    "id already belongs to another entity with a different primary id; not merged");
                conflicts.push(LinkConflict {
                    id: id.clone(),
                    other,
                });
            }
            None => ids.push(id.clone()),
        }
    }
    let link = xref.link(kind, &ids).await?;
    Ok((link, conflicts))
}
