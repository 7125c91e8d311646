//! Diagnosis events read back: the `details` of a `diagnosis` or
//! `dismissed` event, as the store, `selfheal events --json` and
//! `/api/events` return them, into [`StoredDiagnosis`] with its typed
//! [`TriggerDetails`] and [`DiagnosisEvidence`].

use serde::Deserialize;
use serde_json::Value;

use selfheal_event::{Class, Event, EventKind};

use crate::class::TriggerDetails;
use crate::classify::evidence::{DiagnosisEvidence, EvidenceError};

/// A diagnosis (or dismissal) as its event recorded it: what
/// [`Diagnosis::to_event`](crate::Diagnosis::to_event) wrote in `details`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDiagnosis {
    /// The class.
    pub class: Class,
    /// What woke the heavy detector.
    pub trigger: TriggerDetails,
    /// The classifier's evidence.
    pub evidence: DiagnosisEvidence,
    /// From the first sign to the diagnosis, ms, when known.
    pub detection_latency_ms: Option<f64>,
    /// Why there was nobody to act on, when that was a decision.
    pub record_only: Option<String>,
}

/// The `details` document before its evidence is read by class.
#[derive(Deserialize)]
struct Raw {
    class: Class,
    trigger: TriggerDetails,
    evidence: Value,
    #[serde(default)]
    detection_latency_ms: Option<f64>,
    #[serde(default)]
    record_only: Option<String>,
}

/// A stored event that does not read back as a diagnosis.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Only `diagnosis` and `dismissed` events carry one.
    #[error("event {id:?} is a `{kind}` event; only `diagnosis` and `dismissed` events carry a diagnosis")]
    NotADiagnosis {
        /// The event's id in the store.
        id: Option<i64>,
        /// Its kind.
        kind: EventKind,
    },
    /// `details` lacks `class`, `trigger` or `evidence`, has an unknown
    /// class, or a trigger of no known kind.
    #[error("the details of a diagnosis event are not a diagnosis: {0}")]
    Details(#[source] serde_json::Error),
    /// The evidence is not the shape its class writes.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
}

impl StoredDiagnosis {
    /// Reads the diagnosis a `diagnosis` or `dismissed` event carries.
    pub fn from_event(event: &Event) -> Result<StoredDiagnosis, ReadError> {
        if !matches!(event.kind, EventKind::Diagnosis | EventKind::Dismissed) {
            return Err(ReadError::NotADiagnosis {
                id: event.id,
                kind: event.kind,
            });
        }
        StoredDiagnosis::from_details(&event.details)
    }

    /// Reads a diagnosis event's `details` document.
    pub fn from_details(details: &Value) -> Result<StoredDiagnosis, ReadError> {
        let raw = Raw::deserialize(details).map_err(ReadError::Details)?;
        Ok(StoredDiagnosis {
            class: raw.class,
            evidence: DiagnosisEvidence::from_stored(raw.class, &raw.evidence)?,
            trigger: raw.trigger,
            detection_latency_ms: raw.detection_latency_ms,
            record_only: raw.record_only,
        })
    }
}

#[cfg(test)]
mod tests;
