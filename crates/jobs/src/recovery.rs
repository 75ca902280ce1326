//! What a restart does to the jobs the last process left unfinished (after a crash, a `kill -9`
//! or a deploy): a queued job runs; a running job whose answer had not begun runs again from the
//! start, invisibly to its client; a running job whose answer had begun ends `failed` with
//! `gateway_restarted` — never a second answer spliced onto the first. Finished jobs are not
//! touched: nothing that completed runs twice.

use crate::job::{Job, State};

/// What becomes of one unfinished job.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovered {
    /// Queued again (as it was, or set back to the start): it runs.
    Run(Job),
    /// Its answer had begun: it ends with `gateway_restarted`.
    Restarted(Job),
}

/// Decides the fate of `job`, found unfinished by a new process.
pub fn recover(mut job: Job) -> Recovered {
    match job.state {
        State::InProgress if job.output_begun() => Recovered::Restarted(job),
        State::InProgress => {
            // Nothing of the answer was stored, so nothing of it was seen: start over. The
            // gateway's own events (a Response's `response.created`) stay, numbered as they were.
            job.state = State::Queued;
            job.events = job.own_events;
            job.started_at = None;
            job.upstream = None;
            job.upstream_id = None;
            Recovered::Run(job)
        }
        _ => Recovered::Run(job),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Asked, Kind};

    fn job(state: State, events: u64, own: u64) -> Job {
        Job {
            id: "job_1".to_owned(),
            kind: Kind::Job,
            owner: "o".to_owned(),
            state,
            created_at: 1,
            started_at: Some(2),
            finished_at: None,
            deadline_at: 10,
            asked: Asked {
                endpoint: "chat".to_owned(),
                path: "/chat/completions".to_owned(),
                model: Some("m".to_owned()),
                stream: true,
                headers: Vec::new(),
                pinned: None,
            },
            request_id: "r".to_owned(),
            runs: 1,
            events,
            own_events: own,
            answer: None,
            failure: None,
            upstream: Some("a".to_owned()),
            upstream_id: None,
            webhook: None,
            echo: None,
            cancel_requested: false,
        }
    }

    #[test]
    fn a_queued_job_runs_as_it_was() {
        let queued = job(State::Queued, 1, 1);
        assert_eq!(recover(queued.clone()), Recovered::Run(queued));
    }

    #[test]
    fn a_running_job_without_output_starts_over_keeping_the_gateways_own_events() {
        let Recovered::Run(again) = recover(job(State::InProgress, 1, 1)) else {
            panic!("runs again");
        };
        assert_eq!(again.state, State::Queued);
        assert_eq!((again.events, again.own_events), (1, 1));
        assert_eq!(again.upstream, None);
        assert_eq!(again.runs, 1, "the count goes up when it starts");
    }

    #[test]
    fn a_running_job_whose_answer_had_begun_is_not_run_again() {
        let begun = job(State::InProgress, 5, 1);
        assert_eq!(recover(begun.clone()), Recovered::Restarted(begun));
    }
}
