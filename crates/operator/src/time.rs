//! Kubernetes timestamps (k8s-openapi's jiff-based `Time`) beside the chrono times the
//! repository layer records.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;

/// Now, as a Kubernetes `Time`.
pub fn now() -> Time {
    Time(Timestamp::now())
}

/// Now, as a Kubernetes `MicroTime`.
pub fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// A chrono time as a Kubernetes `Time` (the Unix epoch when out of range).
pub fn from_chrono(t: DateTime<Utc>) -> Time {
    Time(
        Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

/// A Kubernetes timestamp as chrono.
pub fn to_chrono(t: &Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}

/// How long ago `t` was (zero for a time in the future).
pub fn age(t: &Timestamp) -> Duration {
    (Utc::now() - to_chrono(t)).to_std().unwrap_or_default()
}
