//! The merchant's configuration in a snapshot (format 6 on): at the start of its piece, as the JSON Postgres stores,
//! or nothing for the default; before format 6, the configuration known now, which must match the fingerprint.

use functions::RfmConfig;

use super::front::MerchantEntry;
use super::wire::{put_len, Reader};
use super::SnapshotError::{self, Corrupt};
use super::{config_fingerprint, Configs};

/// The first format whose pieces start with the merchant's configuration.
pub(super) const CONFIG_IN_PIECE: u16 = 6;

/// The configuration a merchant's state is read under. From format 6 each piece carries its own (`read_merchant`
/// replaces this placeholder); before, it is the one Postgres holds now, and a snapshot taken under another is
/// refused.
pub(super) fn starting_config(
    version: u16,
    entry: &MerchantEntry,
    configs: &Configs,
) -> Result<RfmConfig, SnapshotError> {
    if version >= CONFIG_IN_PIECE {
        return Ok(RfmConfig::default());
    }
    let config = configs
        .get(&entry.id)
        .map(|c| c.clone())
        .unwrap_or_default();
    if config_fingerprint(&config) != entry.fingerprint {
        return Err(SnapshotError::ConfigChanged(entry.id.clone()));
    }
    Ok(config)
}

/// The configuration as its stored JSON, or nothing (length 0) for the default never saved: most merchants never
/// save one, and their pieces stay as small as before. The front's fingerprint pins which default was meant. The
/// revision of a saved one rides in the same object under [`REVISION_KEY`] (no configuration field has that name),
/// so an older revision re-sent after a restore is still recognised.
pub(super) fn write_config(out: &mut Vec<u8>, config: &RfmConfig, revision: u64) {
    if *config == RfmConfig::default() && revision == 0 {
        put_len(out, 0);
        return;
    }
    let mut json = serde_json::to_value(config).unwrap_or_default();
    if let (Some(object), true) = (json.as_object_mut(), revision > 0) {
        object.insert(REVISION_KEY.to_owned(), revision.into());
    }
    let json = serde_json::to_vec(&json).unwrap_or_default();
    put_len(out, json.len());
    out.extend_from_slice(&json);
}

/// Where a piece's configuration carries its revision.
const REVISION_KEY: &str = "_revision";

pub(super) fn read_config(r: &mut Reader<'_>) -> Result<(RfmConfig, u64), SnapshotError> {
    let len = r.count(1)?;
    if len == 0 {
        return Ok((RfmConfig::default(), 0));
    }
    let mut json: serde_json::Value =
        serde_json::from_slice(r.take(len)?).map_err(|_| Corrupt("configuration is not JSON"))?;
    let revision = match json.as_object_mut().and_then(|o| o.remove(REVISION_KEY)) {
        Some(n) => n
            .as_u64()
            .ok_or(Corrupt("configuration revision is not a count"))?,
        None => 0,
    };
    let config = RfmConfig::from_json(&json).map_err(|_| Corrupt("configuration is not valid"))?;
    Ok((config, revision))
}
