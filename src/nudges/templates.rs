//! A merchant's nudge templates in Postgres (`nudge_templates`), with the defaults for every kind not saved.
//!
//! Reads go through a per-instance [`MerchantCache`]: a save through this instance is seen by its next read at
//! once, a save through another instance within [`STALE_AFTER`](super::cache::STALE_AFTER) (30 s). Without a
//! database every merchant has the defaults and nothing can be saved. A save is one transaction: the merchant's
//! row is locked so that two saves of one shop are ordered, the templates are written, and one `audit_logs` row
//! names the kinds whose content changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use functions::nudge::{default_template, Locale, Template, Text};
use functions::NudgeKind;
use serde_json::{json, Value};
use sqlx::{Postgres, Transaction};
use streams::MerchantId;

use super::cache::MerchantCache;
use crate::store::{Store, StoreError};

/// The audit row's action.
pub const AUDIT_ACTION: &str = "nudge_templates_update";

/// One kind's template as the merchant has it: saved, or the default.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub template: Template,
    /// Whether the merchant saved this kind (else it is the default).
    pub saved: bool,
}

/// All seven kinds of one merchant, and the shop's default locale.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSet {
    kinds: BTreeMap<NudgeKind, Effective>,
    /// The third step of the locale chain (`merchants.default_locale`); `None` goes on to `en`.
    pub default_locale: Option<Locale>,
}

impl TemplateSet {
    /// The defaults, for a merchant that saved nothing.
    pub fn defaults() -> TemplateSet {
        TemplateSet::from_saved(BTreeMap::new())
    }

    fn from_saved(mut saved: BTreeMap<NudgeKind, Template>) -> TemplateSet {
        let kinds = NudgeKind::ALL
            .into_iter()
            .map(|kind| {
                let effective = match saved.remove(&kind) {
                    Some(template) => Effective {
                        template,
                        saved: true,
                    },
                    None => Effective {
                        template: default_template(kind),
                        saved: false,
                    },
                };
                (kind, effective)
            })
            .collect();
        TemplateSet {
            kinds,
            default_locale: None,
        }
    }

    pub fn get(&self, kind: NudgeKind) -> &Template {
        // Every kind is filled in by construction.
        &self.kinds[&kind].template
    }

    /// `{"templates": {"at_risk": {…}, …}, "saved": ["loyal"], "default_locale": "fr"}`: the shape a `PUT` takes
    /// back as it is.
    pub fn to_json(&self) -> Value {
        let templates: serde_json::Map<String, Value> = self
            .kinds
            .iter()
            .map(|(kind, e)| (kind.as_str().to_owned(), json!(e.template)))
            .collect();
        let saved: Vec<&str> = self
            .kinds
            .iter()
            .filter(|(_, e)| e.saved)
            .map(|(kind, _)| kind.as_str())
            .collect();
        json!({
            "templates": templates,
            "saved": saved,
            "default_locale": self.default_locale.as_ref().map(Locale::to_string),
        })
    }
}

/// Templates by merchant; cheap to clone, and one per instance so a save here clears the cache every reader uses.
#[derive(Clone)]
pub struct TemplateStore {
    store: Option<Store>,
    cache: Arc<MerchantCache<TemplateSet>>,
}

impl TemplateStore {
    pub fn new(store: Option<Store>) -> TemplateStore {
        TemplateStore {
            store,
            cache: Arc::new(MerchantCache::default()),
        }
    }

    /// Whether templates can be saved (there is a database).
    pub fn persistent(&self) -> bool {
        self.store.is_some()
    }

    /// The merchant's seven templates, from the cache when it is fresh.
    pub async fn get(&self, merchant: &MerchantId) -> Result<Arc<TemplateSet>, StoreError> {
        let started = Instant::now();
        let cached = self.cache.fresh(merchant, started);
        streams::metric_names::cache_lookup("templates", cached.is_some());
        if let Some(set) = cached {
            return Ok(set);
        }
        let Some(store) = &self.store else {
            return Ok(Arc::new(TemplateSet::defaults()));
        };
        let rows: Vec<(String, bool, Value)> = sqlx::query_as(
            "SELECT kind, enabled, texts FROM nudge_templates WHERE merchant_id = $1",
        )
        .bind(merchant.as_str())
        .fetch_all(store.pool())
        .await?;
        let default: Option<String> =
            sqlx::query_scalar("SELECT default_locale FROM merchants WHERE merchant_id = $1")
                .bind(merchant.as_str())
                .fetch_optional(store.pool())
                .await?
                .flatten();
        let mut set = TemplateSet::from_saved(decode(merchant, rows));
        set.default_locale = default.and_then(|raw| stored_locale(merchant, &raw));
        let set = Arc::new(set);
        self.cache.insert(merchant.clone(), started, set.clone());
        Ok(set)
    }

    /// Saves `updates` (already validated) for `merchant` on behalf of `actor`, and the shop's default locale when
    /// `default_locale` is `Some` (`Some(None)` clears it); returns the kinds whose content changed. Errors when
    /// there is no database.
    pub async fn save(
        &self,
        merchant: &MerchantId,
        actor: &str,
        updates: &BTreeMap<NudgeKind, Template>,
        default_locale: Option<Option<&Locale>>,
    ) -> Result<Vec<NudgeKind>, SaveError> {
        let store = self.store.as_ref().ok_or(SaveError::NoDatabase)?;
        let mut tx = store.pool().begin().await.map_err(StoreError::from)?;
        lock_merchant(&mut tx, merchant).await?;
        let rows: Vec<(String, bool, Value)> = sqlx::query_as(
            "SELECT kind, enabled, texts FROM nudge_templates WHERE merchant_id = $1",
        )
        .bind(merchant.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let before = TemplateSet::from_saved(decode(merchant, rows));
        let changed: Vec<NudgeKind> = updates
            .iter()
            .filter(|(kind, template)| before.get(**kind) != *template)
            .map(|(kind, _)| *kind)
            .collect();
        for (kind, template) in updates {
            upsert(&mut tx, merchant, *kind, template).await?;
        }
        let before: Option<String> =
            sqlx::query_scalar("SELECT default_locale FROM merchants WHERE merchant_id = $1")
                .bind(merchant.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::from)?;
        // A document sent back as `GET` answered it names the locale it already has: not a change.
        let default_locale = default_locale
            .map(|l| l.map(Locale::to_string))
            .filter(|l| *l != before);
        if let Some(locale) = &default_locale {
            sqlx::query("UPDATE merchants SET default_locale = $2 WHERE merchant_id = $1")
                .bind(merchant.as_str())
                .bind(locale)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from)?;
        }
        let kinds: Vec<&str> = changed.iter().map(|k| k.as_str()).collect();
        // The default locale is named only when the save changed it.
        let mut detail = json!({ "kinds": kinds });
        if let Some(locale) = default_locale {
            detail["default_locale"] = json!(locale);
        }
        sqlx::query(
            "INSERT INTO audit_logs (merchant_id, actor, action, detail) VALUES ($1, $2, $3, $4)",
        )
        .bind(merchant.as_str())
        .bind(actor)
        .bind(AUDIT_ACTION)
        .bind(detail)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        self.cache.remove(merchant);
        tracing::info!(merchant = %merchant, changed = ?kinds, "nudge templates saved");
        Ok(changed)
    }
}

/// A stored default locale, or `None` (logged) when it no longer parses.
fn stored_locale(merchant: &MerchantId, raw: &str) -> Option<Locale> {
    Locale::parse(raw)
        .inspect_err(
            |e| tracing::warn!(merchant = %merchant, error = %e, "stored default locale ignored"),
        )
        .ok()
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("nudge templates are kept in Postgres, and DATABASE_URL is not set")]
    NoDatabase,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates the merchant's row if it is new, and holds it until the transaction ends.
async fn lock_merchant(
    tx: &mut Transaction<'_, Postgres>,
    merchant: &MerchantId,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO merchants (merchant_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(merchant.as_str())
        .execute(&mut **tx)
        .await?;
    sqlx::query("SELECT 1 FROM merchants WHERE merchant_id = $1 FOR UPDATE")
        .bind(merchant.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn upsert(
    tx: &mut Transaction<'_, Postgres>,
    merchant: &MerchantId,
    kind: NudgeKind,
    template: &Template,
) -> Result<(), StoreError> {
    let texts =
        serde_json::to_value(&template.texts).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO nudge_templates (merchant_id, kind, enabled, texts, updated_at)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (merchant_id, kind)
         DO UPDATE SET enabled = EXCLUDED.enabled, texts = EXCLUDED.texts, updated_at = now()",
    )
    .bind(merchant.as_str())
    .bind(kind.as_str())
    .bind(template.enabled)
    .bind(texts)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Stored rows to templates. Rows are read back without trust: a row whose texts no longer parse or pass the
/// rules (a rule tightened since it was saved) keeps its `enabled` flag, so a kind the merchant turned off stays
/// off, but takes the default texts, and is logged.
fn decode(
    merchant: &MerchantId,
    rows: Vec<(String, bool, Value)>,
) -> BTreeMap<NudgeKind, Template> {
    let mut saved = BTreeMap::new();
    for (kind, enabled, texts) in rows {
        let Some(kind) = NudgeKind::parse(&kind) else {
            continue;
        };
        let parsed = serde_json::from_value::<BTreeMap<String, Text>>(texts)
            .ok()
            .map(|texts| Template { enabled, texts })
            .filter(|t| t.validate(kind.as_str()).is_empty());
        let template = parsed.unwrap_or_else(|| {
            tracing::warn!(merchant = %merchant, kind = kind.as_str(), "stored nudge template is invalid; default texts used");
            Template { enabled, ..default_template(kind) }
        });
        saved.insert(kind, template);
    }
    saved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> MerchantId {
        MerchantId::parse("a-shop.myshopify.com").unwrap()
    }

    #[test]
    fn a_set_has_every_kind_and_says_which_were_saved() {
        let mut loyal = default_template(NudgeKind::Loyal);
        loyal.enabled = false;
        let set = TemplateSet::from_saved(BTreeMap::from([(NudgeKind::Loyal, loyal.clone())]));
        let json = set.to_json();
        assert_eq!(json["saved"], json!(["loyal"]));
        assert_eq!(json["templates"].as_object().unwrap().len(), 7);
        assert_eq!(json["templates"]["loyal"]["enabled"], false);
        assert_eq!(set.get(NudgeKind::Loyal), &loyal);
        assert_eq!(set.get(NudgeKind::New), &default_template(NudgeKind::New));
    }

    #[test]
    fn invalid_rows_keep_their_flag_but_take_the_default_texts() {
        let rows = vec![
            (
                "loyal".to_owned(),
                false,
                json!({"en": {"title": "<b>hi</b>"}}),
            ),
            ("new".to_owned(), true, json!("not texts")),
            ("retired_kind".to_owned(), true, json!({})),
            (
                "churned".to_owned(),
                true,
                json!({"en": {"title": "Hi {first_name}"}}),
            ),
        ];
        let saved = decode(&shop(), rows);
        assert_eq!(saved.len(), 3);
        let loyal = &saved[&NudgeKind::Loyal];
        assert!(!loyal.enabled);
        assert_eq!(loyal.texts, default_template(NudgeKind::Loyal).texts);
        assert_eq!(saved[&NudgeKind::New], default_template(NudgeKind::New));
        assert_eq!(
            saved[&NudgeKind::Churned].texts["en"].title,
            "Hi {first_name}"
        );
    }
}
