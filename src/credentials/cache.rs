//! One credentials table's cache: the last good current value, refreshed in the background,
//! with concurrent fetches coalesced into one call, and the last good value kept (and its age
//! logged) while the source fails.
//!
//! During a rotation the backend may already hold a password the current version does not
//! have yet (single-user rotation between "set" and "finish"), or a second user may be taking
//! over (alternating users). [`Cache::candidates`] lists what to try after a backend refused a
//! login: the freshly read current version, then the pending one, then the previous one. The
//! read is rate-limited, so a burst of refused logins makes one round of reads, not hundreds.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{CredentialSource, Credentials, Stage};
use crate::error::CredentialsError;

/// The shortest time between two rounds of reads caused by refused logins.
const MIN_ROTATION_REFETCH: Duration = Duration::from_secs(1);

/// After a failed background refresh, the next try comes this soon (or at the refresh
/// interval, if that is sooner).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// How long one read of a source may take: a Secrets Manager that accepts the connection and
/// never answers must not hold the start, a refresher or a login forever.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Cache {
    name: String,
    source: Arc<dyn CredentialSource>,
    refresh_interval: Duration,
    state: Mutex<State>,
    /// Held while reading the source; whoever waited for it finds the fresh value instead of
    /// reading again.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    current: Option<Credentials>,
    fetched_at: Option<Instant>,
    /// Bumped by every completed read of the current version, successful or not.
    generation: u64,
    last_error: Option<CredentialsError>,
    /// Credentials a backend accepted after the current ones were refused; tried first until
    /// the current version changes.
    working: Option<Credentials>,
    /// Pending and previous versions from the last rotation round, and when it ran.
    others: Vec<Credentials>,
    rotation_round: Option<Instant>,
    /// The current version this cache held before the last change it saw, and when it saw it.
    replaced: Option<(Credentials, Instant)>,
}

impl Cache {
    pub fn new(name: &str, source: Arc<dyn CredentialSource>, refresh_interval: Duration) -> Cache {
        Cache {
            name: name.to_owned(),
            source,
            refresh_interval,
            state: Mutex::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section is a few assignments; a panic cannot leave it half done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn location(&self) -> String {
        self.source.location()
    }

    /// One read of the source, given up after [`FETCH_TIMEOUT`].
    async fn fetch(&self, stage: Stage) -> Result<Option<Credentials>, CredentialsError> {
        match tokio::time::timeout(FETCH_TIMEOUT, self.source.fetch(stage)).await {
            Ok(result) => result,
            Err(_) => Err(CredentialsError::Unreadable {
                name: self.name.clone(),
                location: self.location(),
                detail: format!("no answer within {}s", FETCH_TIMEOUT.as_secs()),
            }),
        }
    }

    /// How old the cached value is, if there is one.
    pub fn age(&self) -> Option<Duration> {
        self.state().fetched_at.map(|at| at.elapsed())
    }

    /// The cached current version, without reading the source.
    pub fn cached(&self) -> Option<Credentials> {
        self.state().current.clone()
    }

    /// The credentials to log in with: the ones a backend last accepted during a rotation, or
    /// else the cached current version (read now if nothing is cached). From a source whose
    /// values expire, never one older than its `max_age`: a new one is made first, and if that
    /// fails the login fails.
    pub async fn login(&self) -> Result<Credentials, CredentialsError> {
        if let Some(max_age) = self.source.max_age() {
            return self.fresh(max_age).await;
        }
        {
            let state = self.state();
            if let Some(creds) = state.working.as_ref().or(state.current.as_ref()) {
                return Ok(creds.clone());
            }
        }
        self.refresh().await
    }

    /// The cached value if it is younger than `max_age`, else a new one.
    async fn fresh(&self, max_age: Duration) -> Result<Credentials, CredentialsError> {
        let young = |state: &State| {
            state
                .fetched_at
                .is_some_and(|at| at.elapsed() < max_age)
                .then(|| state.current.clone())
                .flatten()
        };
        if let Some(creds) = young(&self.state()) {
            return Ok(creds);
        }
        let refreshed = self.refresh().await;
        let state = self.state();
        match (young(&state), refreshed) {
            (Some(creds), _) => Ok(creds),
            (None, Err(e)) => Err(e),
            (None, Ok(_)) => Err(state.last_error.clone().unwrap_or_else(|| {
                CredentialsError::Unreadable {
                    name: self.name.clone(),
                    location: self.location(),
                    detail: format!(
                        "the last value is older than its lifetime ({} s) and no new one could be made",
                        max_age.as_secs()
                    ),
                }
            })),
        }
    }

    /// The cached current version, read now if nothing is cached.
    pub async fn current(&self) -> Result<Credentials, CredentialsError> {
        if let Some(creds) = self.state().current.clone() {
            return Ok(creds);
        }
        self.refresh().await
    }

    /// Reads the current version (coalesced with any read under way). On failure the last good
    /// value stays and is returned; the error is returned only when there is none.
    pub async fn refresh(&self) -> Result<Credentials, CredentialsError> {
        let seen = self.state().generation;
        let _reading = self.fetching.lock().await;
        if self.state().generation == seen {
            let result = self.fetch(Stage::Current).await;
            self.store(result);
        }
        let state = self.state();
        match (&state.current, &state.last_error) {
            (Some(creds), _) => Ok(creds.clone()),
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err(CredentialsError::NotFound {
                name: self.name.clone(),
                location: self.location(),
            }),
        }
    }

    fn store(&self, result: Result<Option<Credentials>, CredentialsError>) {
        let mut state = self.state();
        state.generation += 1;
        let result = result.and_then(|found| {
            found.ok_or_else(|| CredentialsError::NotFound {
                name: self.name.clone(),
                location: self.location(),
            })
        });
        crate::metrics::secret_fetch(&self.name, result.is_ok());
        let renews = self.source.max_age().is_some();
        match result {
            Ok(creds) if renews => {
                tracing::debug!(credentials = %self.name, location = %self.location(), "credentials renewed");
                if state.last_error.take().is_some() {
                    tracing::info!(credentials = %self.name, "credentials can be made again");
                }
                state.current = Some(creds);
                state.fetched_at = Some(Instant::now());
            }
            Ok(creds) => {
                if let Some(old) = state.current.take_if(|old| *old != creds) {
                    crate::metrics::rotation(&self.name);
                    tracing::info!(
                        credentials = %self.name, location = %self.location(), user = %creds.username,
                        "credentials changed: new backend logins use the new version"
                    );
                    state.working = None;
                    state.replaced = Some((old, Instant::now()));
                }
                if state.last_error.take().is_some() {
                    tracing::info!(credentials = %self.name, "credentials readable again");
                }
                state.current = Some(creds);
                state.fetched_at = Some(Instant::now());
            }
            Err(e) => {
                match state.fetched_at {
                    Some(at) => tracing::warn!(
                        credentials = %self.name, error = %e, stale_for_s = at.elapsed().as_secs(),
                        "credentials refresh failed; serving the last good value"
                    ),
                    None => {
                        tracing::warn!(credentials = %self.name, error = %e, "credentials refresh failed")
                    }
                }
                state.last_error = Some(e);
            }
        }
    }

    /// What to try after a backend refused `refused`, most likely first, none already refused.
    /// Reads the current, pending and previous versions at most once a second; between
    /// rounds the last round's values are used.
    pub async fn candidates(&self, refused: &[Credentials]) -> Vec<Credentials> {
        {
            let mut state = self.state();
            if state.working.as_ref().is_some_and(|w| refused.contains(w)) {
                state.working = None;
            }
        }
        let due = self
            .state()
            .rotation_round
            .is_none_or(|at| at.elapsed() >= MIN_ROTATION_REFETCH);
        if due {
            let _reading = self.fetching.lock().await;
            let due = self
                .state()
                .rotation_round
                .is_none_or(|at| at.elapsed() >= MIN_ROTATION_REFETCH);
            if due {
                let current = self.fetch(Stage::Current).await;
                self.store(current);
                let mut others = Vec::new();
                for stage in [Stage::Pending, Stage::Previous] {
                    match self.fetch(stage).await {
                        Ok(Some(creds)) => others.push(creds),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(credentials = %self.name, stage = stage.label(), error = %e, "could not read a rotation stage")
                        }
                    }
                }
                let mut state = self.state();
                state.others = others;
                state.rotation_round = Some(Instant::now());
            }
        }
        let state = self.state();
        let mut out: Vec<Credentials> = Vec::new();
        for creds in state.current.iter().chain(state.others.iter()) {
            if !refused.contains(creds) && !out.contains(creds) {
                out.push(creds.clone());
            }
        }
        out
    }

    /// The passwords a client may log in with in password mode: the current version, and the
    /// one it replaced if that happened less than `grace` ago (AWSPREVIOUS during the window).
    pub async fn client_passwords(
        &self,
        grace: Duration,
    ) -> Result<Vec<Credentials>, CredentialsError> {
        let current = self.current().await?;
        let state = self.state();
        let previous = state
            .replaced
            .as_ref()
            .filter(|(_, at)| at.elapsed() < grace)
            .map(|(c, _)| c.clone());
        Ok(std::iter::once(current).chain(previous).collect())
    }

    /// Reads the current version again unless it was read less than a second ago: a client
    /// may have a password newer than the cache.
    pub async fn refresh_if_stale(&self) {
        let fresh = self
            .state()
            .fetched_at
            .is_some_and(|at| at.elapsed() < MIN_ROTATION_REFETCH);
        if !fresh {
            let _ = self.refresh().await;
        }
    }

    /// Records that a backend accepted `creds`. When they are not the current version (a
    /// rotation is under way), later logins try them first until the current version changes.
    pub fn accepted(&self, creds: &Credentials) {
        if self.source.max_age().is_some() {
            // Each value is new and soon expires: none is worth holding on to.
            return;
        }
        let mut state = self.state();
        if state.current.as_ref() != Some(creds) && state.working.as_ref() != Some(creds) {
            tracing::info!(
                credentials = %self.name, user = %creds.username,
                "rotation: the backend accepts a version other than the current one; using it until the current version changes"
            );
            state.working = Some(creds.clone());
            crate::metrics::rotation(&self.name);
        }
    }

    /// Refreshes every `refresh_interval` (sooner after a failure) until `stop`.
    pub async fn refresh_forever(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let failing = self.state().last_error.is_some();
            let wait = if failing {
                self.refresh_interval.min(RETRY_AFTER_FAILURE)
            } else {
                self.refresh_interval
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let _ = self.refresh().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::credentials::{BoxFuture, Secret};

    /// A source whose versions the test sets, counting reads.
    #[derive(Debug, Default)]
    struct Scripted {
        versions: Mutex<Vec<(Stage, Result<Credentials, CredentialsError>)>>,
        reads: AtomicUsize,
        /// Set for a source whose values expire, as IAM tokens do.
        max_age: Option<Duration>,
    }

    impl Scripted {
        fn set(&self, stage: Stage, value: Result<Credentials, CredentialsError>) {
            let mut v = self.versions.lock().unwrap();
            v.retain(|(s, _)| *s != stage);
            v.push((stage, value));
        }
    }

    impl CredentialSource for Scripted {
        fn fetch(
            &self,
            stage: Stage,
        ) -> BoxFuture<'_, Result<Option<Credentials>, CredentialsError>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let found = self
                .versions
                .lock()
                .unwrap()
                .iter()
                .find(|(s, _)| *s == stage)
                .map(|(_, v)| v.clone());
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                found.transpose()
            })
        }
        fn location(&self) -> String {
            "a script".into()
        }
        fn max_age(&self) -> Option<Duration> {
            self.max_age
        }
    }

    fn creds(user: &str, password: &str) -> Credentials {
        Credentials {
            username: user.into(),
            password: Secret::new(password.into()),
            host: None,
            port: None,
            dbname: None,
        }
    }

    fn down() -> CredentialsError {
        CredentialsError::Unreadable {
            name: "t".into(),
            location: "x".into(),
            detail: "down".into(),
        }
    }

    #[tokio::test]
    async fn concurrent_reads_are_coalesced() {
        let source = Arc::new(Scripted::default());
        source.set(Stage::Current, Ok(creds("u", "1")));
        let cache = Arc::new(Cache::new("t", source.clone(), Duration::from_secs(60)));
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                tokio::spawn({
                    let cache = cache.clone();
                    async move { cache.refresh().await }
                })
            })
            .collect();
        for w in waiters {
            assert_eq!(w.await.unwrap().unwrap(), creds("u", "1"));
        }
        assert!(
            source.reads.load(Ordering::SeqCst) <= 2,
            "50 refreshes made {} reads",
            source.reads.load(Ordering::SeqCst)
        );
    }

    #[tokio::test]
    async fn failures_keep_the_last_good_value() {
        let source = Arc::new(Scripted::default());
        let cache = Cache::new("t", source.clone(), Duration::from_secs(60));
        source.set(Stage::Current, Err(down()));
        assert!(cache.login().await.is_err(), "nothing cached yet");
        source.set(Stage::Current, Ok(creds("u", "1")));
        assert_eq!(cache.refresh().await.unwrap(), creds("u", "1"));
        source.set(Stage::Current, Err(down()));
        assert_eq!(
            cache.refresh().await.unwrap(),
            creds("u", "1"),
            "stale on error"
        );
        assert_eq!(cache.login().await.unwrap(), creds("u", "1"));
        assert!(cache.age().is_some());
    }

    #[tokio::test]
    async fn rotation_candidates_come_in_stage_order_and_are_rate_limited() {
        let source = Arc::new(Scripted::default());
        source.set(Stage::Current, Ok(creds("u", "old")));
        let cache = Cache::new("t", source.clone(), Duration::from_secs(60));
        let old = cache.login().await.unwrap();
        // Single-user window: the backend already has "new", which is only AWSPENDING.
        source.set(Stage::Pending, Ok(creds("u", "new")));
        source.set(Stage::Previous, Ok(creds("u", "older")));
        let reads = source.reads.load(Ordering::SeqCst);
        let next = cache.candidates(std::slice::from_ref(&old)).await;
        assert_eq!(next, vec![creds("u", "new"), creds("u", "older")]);
        assert_eq!(
            source.reads.load(Ordering::SeqCst),
            reads + 3,
            "current, pending, previous"
        );
        // A second refusal right after reads nothing.
        let again = cache.candidates(std::slice::from_ref(&old)).await;
        assert_eq!(again, next);
        assert_eq!(source.reads.load(Ordering::SeqCst), reads + 3);
        // The backend took "new": later logins use it without a refused attempt first...
        cache.accepted(&creds("u", "new"));
        assert_eq!(cache.login().await.unwrap(), creds("u", "new"));
        // ...until the current version changes.
        source.set(Stage::Current, Ok(creds("u", "newest")));
        cache.refresh().await.unwrap();
        assert_eq!(cache.login().await.unwrap(), creds("u", "newest"));
    }

    #[tokio::test]
    async fn expiring_values_are_never_used_past_their_age() {
        let source = Arc::new(Scripted {
            max_age: Some(Duration::from_millis(300)),
            ..Scripted::default()
        });
        source.set(Stage::Current, Ok(creds("u", "token-1")));
        let cache = Cache::new("t", source.clone(), Duration::from_secs(3600));
        assert_eq!(cache.login().await.unwrap(), creds("u", "token-1"));
        let reads = source.reads.load(Ordering::SeqCst);
        assert_eq!(
            cache.login().await.unwrap(),
            creds("u", "token-1"),
            "still young"
        );
        assert_eq!(source.reads.load(Ordering::SeqCst), reads);
        // Past its age, the next login makes a new one first.
        source.set(Stage::Current, Ok(creds("u", "token-2")));
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(cache.login().await.unwrap(), creds("u", "token-2"));
        // A backend accepting an older value does not make it the one to use.
        cache.accepted(&creds("u", "token-1"));
        assert_eq!(cache.login().await.unwrap(), creds("u", "token-2"));
        // When no new one can be made, the expired one is not served in its place.
        source.set(Stage::Current, Err(down()));
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(cache.login().await.is_err(), "an expired value was served");
        // Stale-on-error still holds for what the cache reports as last read.
        assert_eq!(cache.cached(), Some(creds("u", "token-2")));
    }
}
