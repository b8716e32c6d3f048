//! Canary analysis facts: a batch's analysis started, one round of its samples
//! committed, its verdict committed; and an operator's resume accepting a marginal or
//! inconclusive verdict.

use flotilla_shared::analysis::{Report, Verdict};
use flotilla_shared::model::{HostId, ServiceName};

use super::{Refusal, Run, ServiceState, refuse};
use crate::analysis::{Analysis, Round, Sample};
use crate::event::EventKind;
use crate::text;

impl Run {
    /// The analysis of a batch that has not been judged, refused otherwise.
    fn open_analysis(&self, stage: usize, service: &ServiceName, batch: usize) -> Result<usize, Refusal> {
        let Some(i) = self.analyses.iter().rposition(|a| a.stage == stage && a.batch == batch && &a.service == service)
        else {
            return refuse(format!("{service} batch {batch} has no analysis in stage {stage}"));
        };
        if self.analyses[i].report.is_some() {
            return refuse(format!("the analysis of {service} batch {batch} is already judged"));
        }
        let svc = self.service_in(stage, service)?;
        if svc.batch != batch || !matches!(svc.state, ServiceState::Deploying | ServiceState::Baking) {
            return refuse(format!("{service} batch {batch} is no longer rolling out"));
        }
        Ok(i)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn analysis_started(
        &mut self,
        at: i64,
        stage: usize,
        service: &ServiceName,
        batch: usize,
        metrics: &[String],
        canary: &[HostId],
        baseline: &[HostId],
        baseline_versions: &[String],
        interval_ms: u64,
    ) -> Result<(), Refusal> {
        // Every check before the first change: a refused fact changes nothing.
        let svc = self.service_in(stage, service)?;
        if svc.batch != batch || !matches!(svc.state, ServiceState::Deploying | ServiceState::Baking) {
            return refuse(format!("{service} batch {batch} is not rolling out"));
        }
        let Some(spec) = svc.batches.get(batch) else {
            return refuse(format!("{service} has no batch {batch}"));
        };
        // A batch has one analysis, and another only after a human resumed past a
        // failed one (the service is retried).
        let retried =
            |a: &Analysis| a.accepted_by.is_some() && a.report.as_ref().is_some_and(|r| r.verdict == Verdict::Fail);
        if self.analysis(stage, service, batch).is_some_and(|a| !retried(a)) {
            return refuse(format!("the analysis of {service} batch {batch} has started already"));
        }
        if metrics.is_empty() || canary.is_empty() || interval_ms == 0 {
            return refuse("an analysis needs metrics, canary hosts and an interval");
        }
        if let Some(h) = canary.iter().find(|h| !svc.hosts.contains_key(*h)) {
            return refuse(format!("canary host {h} does not run {service} in stage {stage}"));
        }
        let (batch_name, version) = (spec.name.clone(), svc.version.clone());
        let stage_name = self.stage_name(stage);
        self.analyses.push(Analysis {
            stage,
            service: service.clone(),
            batch,
            batch_name: batch_name.clone(),
            metrics: metrics.to_vec(),
            canary: canary.to_vec(),
            baseline: baseline.to_vec(),
            version: version.clone(),
            baseline_versions: baseline_versions.to_vec(),
            interval_ms,
            started_unix_ms: at,
            rounds: Vec::new(),
            report: None,
            judged_unix_ms: 0,
            accepted_by: None,
        });
        let message = text::analysis_started(
            service,
            &batch_name,
            metrics,
            interval_ms,
            canary.len(),
            baseline.len(),
            baseline_versions,
        );
        let e = self.record(at, EventKind::AnalysisStarted, message);
        e.stage = stage_name;
        e.services = vec![service.clone()];
        e.batch = batch_name;
        e.hosts = canary.to_vec();
        e.version = version;
        Ok(())
    }

    pub(super) fn analysis_sampled(
        &mut self,
        at: i64,
        stage: usize,
        service: &ServiceName,
        batch: usize,
        round: usize,
        samples: &[Sample],
    ) -> Result<(), Refusal> {
        let i = self.open_analysis(stage, service, batch)?;
        let analysis = &self.analyses[i];
        if round != analysis.rounds.len() {
            return refuse(format!(
                "round {round} of the analysis of {service} batch {batch} is not the next ({})",
                analysis.rounds.len()
            ));
        }
        if let Some(s) = samples.iter().find(|s| !analysis.metrics.contains(&s.metric)) {
            return refuse(format!("{} is not a metric of the analysis of {service} batch {batch}", s.metric));
        }
        if samples.iter().flat_map(|s| s.canary.iter().chain(&s.baseline)).any(|v| !v.is_finite()) {
            return refuse("a sample is not a finite number");
        }
        let errors: Vec<(&str, &str)> =
            samples.iter().filter_map(|s| s.error.as_deref().map(|e| (s.metric.as_str(), e))).collect();
        let message = (!errors.is_empty()).then(|| text::analysis_query_failed(service, &analysis.batch_name, &errors));
        let batch_name = analysis.batch_name.clone();
        let stage_name = self.stage_name(stage);
        self.analyses[i].rounds.push(Round { at_unix_ms: at, samples: samples.to_vec() });
        if let Some(message) = message {
            let e = self.record(at, EventKind::AnalysisQueryFailed, message);
            e.stage = stage_name;
            e.services = vec![service.clone()];
            e.batch = batch_name;
        }
        Ok(())
    }

    pub(super) fn analysis_judged(
        &mut self,
        at: i64,
        stage: usize,
        service: &ServiceName,
        batch: usize,
        report: &Report,
    ) -> Result<(), Refusal> {
        let i = self.open_analysis(stage, service, batch)?;
        let stage_name = self.stage_name(stage);
        let analysis = &mut self.analyses[i];
        analysis.report = Some(report.clone());
        analysis.judged_unix_ms = at;
        let (batch_name, version, hosts) =
            (analysis.batch_name.clone(), analysis.version.clone(), analysis.canary.clone());
        let kind = match report.verdict {
            Verdict::Pass => EventKind::AnalysisPassed,
            Verdict::Fail => EventKind::AnalysisFailed,
            Verdict::Marginal | Verdict::Inconclusive => EventKind::AnalysisInconclusive,
        };
        let e = self.record(at, kind, text::analysis_judged(service, &batch_name, report));
        e.stage = stage_name;
        e.services = vec![service.clone()];
        e.batch = batch_name;
        e.hosts = hosts;
        e.version = version;
        Ok(())
    }

    /// Marks the judged, not passed analyses of the current stage as resumed past by
    /// `actor`: a marginal or inconclusive verdict is accepted (the batch goes on), a
    /// failed one is analysed again with the retried service. Returns which
    /// (`payments canary`).
    pub(super) fn accept_analyses(&mut self, actor: &str) -> Vec<String> {
        let mut accepted = Vec::new();
        let stage = self.stage;
        for a in self.analyses.iter_mut().filter(|a| a.stage == stage && a.accepted_by.is_none()) {
            if a.report.as_ref().is_some_and(|r| r.verdict != Verdict::Pass) {
                a.accepted_by = Some(actor.to_owned());
                accepted.push(format!("{} {}", a.service, a.batch_name));
            }
        }
        accepted
    }
}
