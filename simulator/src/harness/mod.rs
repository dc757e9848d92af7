//! What both modes share: the plan and each worker's share of it ([`plan`]), the options
//! ([`options`]), the per-process engine and its clock ([`engine`]), arrival schedules
//! ([`schedule`]), the measurements
//! ([`stats`], [`cpu`]), the workers and their protocol ([`workers`]), the controller that
//! merges them ([`controller`]), the verdicts and the knee ([`ramp`]), the report, the plot and
//! the progress line ([`report`], [`plot`], [`progress`]). A mode plugs in through [`mode`]'s
//! trait (its run of one worker, and how its figures read) and the engine's `Load`.

pub mod controller;
pub mod cpu;
pub mod engine;
pub mod mode;
pub mod options;
pub mod plan;
pub mod plot;
pub mod progress;
pub mod ramp;
pub mod report;
pub mod schedule;
pub mod stats;
pub mod workers;
