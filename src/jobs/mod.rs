//! The intelligence each cadence job computes over the marts: journey funnels and the KPI
//! hierarchy (monthly), the Deal Risk Monitor (weekly). Jobs publish through `outputs`.

pub mod calendar;
pub mod funnel;
pub mod kpi;
pub mod risk;
