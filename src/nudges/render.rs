//! The text a widget shows for a pending nudge: the merchant's template of the nudge's kind (or, for a nudge in an
//! A/B experiment's arm with texts of its own, the arm's texts), in the customer's locale, with the customer's
//! values filled in.
//!
//! The caller opens the first name from the sealed personal data and passes it in; nothing here sees sealed data or
//! keeps a name. The locale chain is the customer's locale, its language, the shop's default (saved with the
//! templates, `merchants.default_locale`), then `en`. `{points}` is the customer's points balance when the nudge
//! fired, carried on the nudge. `{segment}` is the segment's display name from the merchant's RFM
//! configuration, in the language of the text used, else its key. `{discount_code}` renders empty: there is no
//! source of discount codes until issue 19.

use std::sync::Arc;
use std::time::Instant;

use actors::vocab::PendingNudge;
use functions::nudge::experiment::Experiment;
use functions::nudge::{fallback_chain, render, Locale, Template, Vars};
use functions::segment::SegmentRule;
use functions::RfmConfig;
use serde::Serialize;
use streams::MerchantId;

use super::cache::MerchantCache;
use super::templates::TemplateStore;
use crate::experiments::ledger::{ledger, Ledger};
use crate::store::{Store, StoreError};

/// What the widget displays, as plain text (it escapes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WidgetText {
    /// The nudge kind (`at_risk`, …).
    pub kind: &'static str,
    /// The locale of the text used (`es` for an `es-MX` customer with Spanish texts).
    pub locale: String,
    /// `rtl` or `ltr`.
    pub dir: &'static str,
    pub title: String,
    pub body: String,
}

/// Renders pending nudges; clone one per instance from the instance's [`TemplateStore`].
#[derive(Clone)]
pub struct NudgeRenderer {
    templates: TemplateStore,
    store: Option<Store>,
    /// Where the experiments (and so the arms' texts) are kept.
    ledger: Option<Ledger>,
    segments: Arc<MerchantCache<Vec<SegmentRule>>>,
    /// The merchant's experiments, running or ended (a nudge of an ended one may still be pending).
    experiments: Arc<MerchantCache<Vec<Experiment>>>,
}

impl NudgeRenderer {
    pub fn new(templates: TemplateStore, store: Option<Store>) -> NudgeRenderer {
        NudgeRenderer {
            templates,
            ledger: ledger(store.as_ref(), false, Default::default()),
            store,
            segments: Arc::new(MerchantCache::default()),
            experiments: Arc::new(MerchantCache::default()),
        }
    }

    /// The renderer reading the arms' texts from `ledger` (the demo's in-memory one) rather than the store.
    pub fn with_ledger(mut self, ledger: Option<Ledger>) -> NudgeRenderer {
        if ledger.is_some() {
            self.ledger = ledger;
        }
        self
    }

    /// The nudge's text for this customer; `None` when the merchant turned the kind's template off.
    pub async fn render(
        &self,
        nudge: &PendingNudge,
        first_name: Option<&str>,
        points: Option<i64>,
    ) -> Result<Option<WidgetText>, StoreError> {
        let merchant = &nudge.key.merchant;
        let set = self.templates.get(merchant).await?;
        let kind_template = set.get(nudge.kind);
        if !kind_template.enabled {
            return Ok(None);
        }
        let arm_template = self.arm_template(nudge).await;
        let template = arm_template.as_ref().unwrap_or(kind_template);
        let customer = nudge.locale.as_deref().and_then(|l| Locale::parse(l).ok());
        let shop_default = set.default_locale.clone();
        let chain = fallback_chain(customer.as_ref(), shop_default.as_ref());
        let text_locale = template.text_for(&chain).next().map(|(l, _)| l.clone());
        let rules = self.segment_rules(merchant).await;
        let segment = segment_name(
            &rules,
            &nudge.segment,
            text_locale.as_ref(),
            shop_default.as_ref(),
        );
        let vars = Vars {
            first_name,
            points,
            segment: &segment,
            discount_code: None,
        };
        Ok(render(template, &chain, &vars).map(|shown| WidgetText {
            kind: nudge.kind.as_str(),
            locale: shown.locale.to_string(),
            dir: shown.dir,
            title: shown.title,
            body: shown.body,
        }))
    }

    /// The texts of the nudge's experiment arm, when it has its own. Like a display name, not worth failing a
    /// nudge over: when the experiments cannot be read, the kind's template is used.
    async fn arm_template(&self, nudge: &PendingNudge) -> Option<Template> {
        let id = nudge.experiment_id.as_deref()?;
        let merchant = &nudge.key.merchant;
        let cached = self.experiments.fresh(merchant, Instant::now());
        // An experiment the cached list does not know is newer than the list: load again.
        let cached = cached.filter(|list| list.iter().any(|e| e.id.as_str() == id));
        streams::metric_names::cache_lookup("plans", cached.is_some());
        let experiments = match cached {
            Some(list) => list,
            None => self.load_experiments(merchant).await?,
        };
        let experiment = experiments.iter().find(|e| e.id.as_str() == id)?;
        let arm = experiment.arms.iter().find(|a| a.name == *nudge.variant)?;
        (!arm.texts.is_empty()).then(|| Template {
            enabled: true,
            texts: arm.texts.clone(),
        })
    }

    async fn load_experiments(&self, merchant: &MerchantId) -> Option<Arc<Vec<Experiment>>> {
        let started = Instant::now();
        let stored = self.ledger.as_ref()?.experiments(merchant).await;
        let experiments: Arc<Vec<Experiment>> = match stored {
            Ok(stored) => Arc::new(stored.into_iter().map(|s| s.experiment).collect()),
            Err(e) => {
                tracing::warn!(merchant = %merchant, error = %e, "experiment texts unavailable for a nudge");
                return None;
            }
        };
        self.experiments
            .insert(merchant.clone(), started, Arc::clone(&experiments));
        Some(experiments)
    }

    /// The merchant's segment table. A display name is not worth failing a nudge over: when the configuration
    /// cannot be read, the defaults' names are used (and a segment of the merchant's own then shows its key).
    async fn segment_rules(&self, merchant: &MerchantId) -> Arc<Vec<SegmentRule>> {
        let started = Instant::now();
        if let Some(rules) = self.segments.fresh(merchant, started) {
            return rules;
        }
        let Some(store) = &self.store else {
            return Arc::new(RfmConfig::default().segments);
        };
        match store.load_config(merchant).await {
            Ok(config) => {
                let rules = Arc::new(config.unwrap_or_default().segments);
                self.segments
                    .insert(merchant.clone(), started, rules.clone());
                rules
            }
            Err(e) => {
                tracing::warn!(merchant = %merchant, error = %e, "segment names unavailable for a nudge");
                Arc::new(RfmConfig::default().segments)
            }
        }
    }
}

/// The segment's name in the text's locale (or along its own fallback chain), else its key.
fn segment_name(
    rules: &[SegmentRule],
    key: &str,
    text_locale: Option<&Locale>,
    shop_default: Option<&Locale>,
) -> String {
    let Some(rule) = rules.iter().find(|r| r.key == key) else {
        return key.to_owned();
    };
    fallback_chain(text_locale, shop_default)
        .iter()
        .find_map(|l| rule.name.get(l.as_str()))
        .filter(|name| !name.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use functions::segment::default_rules;

    fn locale(raw: &str) -> Locale {
        Locale::parse(raw).unwrap()
    }

    #[test]
    fn segment_names_follow_the_text_locale() {
        let rules = default_rules();
        assert_eq!(
            segment_name(&rules, "at_risk", Some(&locale("es")), None),
            "En riesgo"
        );
        assert_eq!(
            segment_name(&rules, "at_risk", Some(&locale("es-MX")), None),
            "En riesgo"
        );
        assert_eq!(
            segment_name(&rules, "at_risk", Some(&locale("fr")), None),
            "At-Risk"
        );
        assert_eq!(segment_name(&rules, "at_risk", None, None), "At-Risk");
        assert_eq!(
            segment_name(&rules, "vip_gold", Some(&locale("es")), None),
            "vip_gold"
        );
    }
}
