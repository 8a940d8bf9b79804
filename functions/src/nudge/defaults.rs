//! The templates a merchant starts with, in English, Spanish, French, German and Arabic, all enabled.
//!
//! Each text puts `{first_name}` where leaving it out still reads well (`We miss you, {first_name}!` becomes `We
//! miss you!`), and none uses `{discount_code}`, which renders empty until discount codes exist (issue 19).
//! `{segment}` appears only in English and Spanish, the languages the default segment names are written in.

use std::collections::BTreeMap;

use crate::nudge::template::{Template, Text};
use crate::NudgeKind;

/// `(locale, title, body)` for one kind.
type Texts = [(&'static str, &'static str, &'static str); 5];

/// The default template of `kind`.
pub fn default_template(kind: NudgeKind) -> Template {
    let texts = texts(kind)
        .into_iter()
        .map(|(locale, title, body)| {
            let text = Text {
                title: title.to_owned(),
                body: body.to_owned(),
            };
            (locale.to_owned(), text)
        })
        .collect::<BTreeMap<_, _>>();
    Template {
        enabled: true,
        texts,
    }
}

fn texts(kind: NudgeKind) -> Texts {
    match kind {
        NudgeKind::AtRisk => AT_RISK,
        NudgeKind::Loyal => LOYAL,
        NudgeKind::New => NEW,
        NudgeKind::Inactive => INACTIVE,
        NudgeKind::Champions => CHAMPIONS,
        NudgeKind::TierDropped => TIER_DROPPED,
        NudgeKind::Churned => CHURNED,
    }
}

const AT_RISK: Texts = [
    ("en", "We miss you, {first_name}!", "It has been a while. Come and see what is new: your {points} points are still here."),
    ("es", "¡Te echamos de menos, {first_name}!", "Ha pasado un tiempo. Ven a ver las novedades: tus {points} puntos siguen aquí."),
    ("fr", "Vous nous manquez, {first_name} !", "Cela fait un moment. Venez voir les nouveautés : vos {points} points vous attendent."),
    ("de", "Wir vermissen dich, {first_name}!", "Es ist eine Weile her. Schau dir die Neuheiten an – deine {points} Punkte warten auf dich."),
    ("ar", "اشتقنا إليك، {first_name}!", "مرّ وقت منذ زيارتك الأخيرة. لديك {points} نقطة بانتظارك."),
];

const LOYAL: Texts = [
    (
        "en",
        "Thank you, {first_name}!",
        "You are now one of our {segment} customers. We are glad to have you.",
    ),
    (
        "es",
        "¡Gracias, {first_name}!",
        "Ya formas parte de nuestros clientes {segment}. Nos alegra tenerte.",
    ),
    (
        "fr",
        "Merci, {first_name} !",
        "Vous faites désormais partie de nos clients fidèles. Merci de votre confiance.",
    ),
    (
        "de",
        "Danke, {first_name}!",
        "Du gehörst jetzt zu unseren treuen Kundinnen und Kunden. Schön, dass du da bist.",
    ),
    (
        "ar",
        "شكرًا لك، {first_name}!",
        "أصبحت الآن من عملائنا الأوفياء. يسعدنا وجودك معنا.",
    ),
];

const NEW: Texts = [
    (
        "en",
        "Welcome, {first_name}!",
        "Thanks for your first order. From now on, every purchase earns you points.",
    ),
    (
        "es",
        "¡Te damos la bienvenida, {first_name}!",
        "Gracias por tu primer pedido. Desde ahora, cada compra te da puntos.",
    ),
    (
        "fr",
        "Bienvenue, {first_name} !",
        "Merci pour votre première commande. Désormais, chaque achat vous rapporte des points.",
    ),
    (
        "de",
        "Willkommen, {first_name}!",
        "Danke für deine erste Bestellung. Ab jetzt bringt dir jeder Einkauf Punkte.",
    ),
    (
        "ar",
        "أهلًا بك، {first_name}!",
        "شكرًا على طلبك الأول. من الآن، كل عملية شراء تمنحك نقاطًا.",
    ),
];

const INACTIVE: Texts = [
    (
        "en",
        "It has been a while, {first_name}",
        "We would love to see you again. Have a look at what is new in the shop.",
    ),
    (
        "es",
        "Hace tiempo que no te vemos, {first_name}",
        "Nos encantaría verte de nuevo. Echa un vistazo a las novedades de la tienda.",
    ),
    (
        "fr",
        "Cela fait longtemps, {first_name}",
        "Nous serions ravis de vous revoir. Découvrez les nouveautés de la boutique.",
    ),
    (
        "de",
        "Lange nicht gesehen, {first_name}",
        "Wir würden uns freuen, dich wiederzusehen. Entdecke, was es Neues im Shop gibt.",
    ),
    (
        "ar",
        "لم نرك منذ مدة، {first_name}",
        "يسعدنا أن نراك مجددًا. اطّلع على الجديد في المتجر.",
    ),
];

const CHAMPIONS: Texts = [
    (
        "en",
        "You are one of our best, {first_name}!",
        "Thank you for shopping with us so often. You have {points} points to spend.",
    ),
    (
        "es",
        "¡Eres de lo mejor, {first_name}!",
        "Gracias por comprar con nosotros tan a menudo. Tienes {points} puntos para usar.",
    ),
    (
        "fr",
        "Vous êtes parmi nos meilleurs clients, {first_name} !",
        "Merci de votre fidélité. Vous avez {points} points à utiliser.",
    ),
    (
        "de",
        "Du gehörst zu unseren Besten, {first_name}!",
        "Danke, dass du so oft bei uns einkaufst. Du hast {points} Punkte zum Einlösen.",
    ),
    (
        "ar",
        "أنت من أفضل عملائنا، {first_name}!",
        "شكرًا لتسوقك معنا باستمرار. لديك {points} نقطة يمكنك استخدامها.",
    ),
];

const TIER_DROPPED: Texts = [
    (
        "en",
        "Your perks are waiting, {first_name}",
        "One more order soon keeps you among our top customers.",
    ),
    (
        "es",
        "Tus ventajas te esperan, {first_name}",
        "Un pedido pronto te mantiene entre nuestros mejores clientes.",
    ),
    (
        "fr",
        "Vos avantages vous attendent, {first_name}",
        "Une commande prochainement vous garde parmi nos meilleurs clients.",
    ),
    (
        "de",
        "Deine Vorteile warten, {first_name}",
        "Mit einer Bestellung bald bleibst du bei unseren besten Kunden.",
    ),
    (
        "ar",
        "مزاياك بانتظارك، {first_name}",
        "طلب قريب يبقيك بين أفضل عملائنا.",
    ),
];

const CHURNED: Texts = [
    ("en", "Long time no see, {first_name}!", "A lot has changed since your last visit, and your {points} points are still yours."),
    ("es", "¡Cuánto tiempo, {first_name}!", "Han cambiado muchas cosas desde tu última visita, y tus {points} puntos siguen siendo tuyos."),
    ("fr", "Ça fait longtemps, {first_name} !", "Beaucoup de choses ont changé depuis votre dernière visite, et vos {points} points sont toujours là."),
    ("de", "Lange her, {first_name}!", "Seit deinem letzten Besuch hat sich viel getan, und deine {points} Punkte gehören noch dir."),
    ("ar", "طال الغياب، {first_name}!", "تغيّر الكثير منذ زيارتك الأخيرة، وما زالت لديك {points} نقطة."),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_five_valid_locales() {
        for kind in NudgeKind::ALL {
            let template = default_template(kind);
            assert!(template.enabled);
            let locales: Vec<_> = template.texts.keys().map(String::as_str).collect();
            assert_eq!(locales, ["ar", "de", "en", "es", "fr"], "{kind:?}");
            assert_eq!(template.validate(kind.as_str()), vec![], "{kind:?}");
        }
    }

    #[test]
    fn arabic_texts_are_in_arabic_script() {
        let arabic = |c: char| ('\u{0600}'..='\u{06ff}').contains(&c);
        for kind in NudgeKind::ALL {
            let ar = &default_template(kind).texts["ar"];
            let words = format!("{} {}", ar.title, ar.body)
                .replace("{first_name}", "")
                .replace("{points}", "");
            assert!(words.chars().any(arabic), "{kind:?}");
            assert!(
                !words.chars().any(|c| c.is_ascii_alphabetic()),
                "{kind:?}: {words}"
            );
        }
    }

    #[test]
    fn no_default_uses_a_discount_code() {
        for kind in NudgeKind::ALL {
            for text in default_template(kind).texts.values() {
                assert!(
                    !text.title.contains("{discount_code}")
                        && !text.body.contains("{discount_code}")
                );
            }
        }
    }
}
