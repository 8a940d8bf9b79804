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

/// The configuration as its stored JSON, or nothing (length 0) for the default: most merchants never save one,
/// and their pieces stay as small as before. The front's fingerprint pins which default was meant.
pub(super) fn write_config(out: &mut Vec<u8>, config: &RfmConfig) {
    if *config == RfmConfig::default() {
        put_len(out, 0);
        return;
    }
    let json = serde_json::to_vec(config).unwrap_or_default();
    put_len(out, json.len());
    out.extend_from_slice(&json);
}

pub(super) fn read_config(r: &mut Reader<'_>) -> Result<RfmConfig, SnapshotError> {
    let len = r.count(1)?;
    if len == 0 {
        return Ok(RfmConfig::default());
    }
    let json: serde_json::Value =
        serde_json::from_slice(r.take(len)?).map_err(|_| Corrupt("configuration is not JSON"))?;
    RfmConfig::from_json(&json).map_err(|_| Corrupt("configuration is not valid"))
}
