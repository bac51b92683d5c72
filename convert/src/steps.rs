//! Steps and their report entries. Each step is named and classified: **essential** steps make
//! the system boot and be reachable (fstab and boot devices, network names, initramfs with
//! virtio, bootloader) and abort the conversion when they fail; **improving** steps (growing
//! filesystems, purging guest tools, SELinux relabel) turn a failure into a warning in the
//! report and the conversion goes on.

use anyhow::Result;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Essential,
    Improving,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Done,
    /// Improving step failed: the conversion went on.
    Warning,
    Failed,
    /// Not needed (e.g. the system was converted before).
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub name: &'static str,
    pub class: Class,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub seconds: f64,
}

/// The step log of one conversion.
#[derive(Debug, Default, Serialize)]
pub struct Log {
    pub steps: Vec<StepReport>,
    pub warnings: Vec<String>,
}

impl Log {
    /// Runs one step. An essential step's error is returned (with the step's name); an
    /// improving step's error becomes a warning and `None`.
    pub fn step<T>(
        &mut self,
        name: &'static str,
        class: Class,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<Option<T>> {
        let t0 = Instant::now();
        log::info!("convert: step {name}");
        let r = f();
        let seconds = t0.elapsed().as_secs_f64();
        match r {
            Ok(v) => {
                self.steps.push(StepReport { name, class, outcome: Outcome::Done, error: None, seconds });
                Ok(Some(v))
            }
            Err(e) => {
                let msg = format!("{e:#}");
                let outcome = if class == Class::Essential { Outcome::Failed } else { Outcome::Warning };
                self.steps.push(StepReport { name, class, outcome, error: Some(msg.clone()), seconds });
                match class {
                    Class::Essential => Err(e.context(format!("step {name}"))),
                    Class::Improving => {
                        log::warn!("convert: {name} (improving) failed, going on: {msg}");
                        self.warnings.push(format!("{name}: {msg}"));
                        Ok(None)
                    }
                }
            }
        }
    }

    pub fn skipped(&mut self, name: &'static str, class: Class) {
        self.steps.push(StepReport { name, class, outcome: Outcome::Skipped, error: None, seconds: 0.0 });
    }
}
