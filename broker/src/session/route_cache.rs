//! A session's route cache: what the subjects it publishes to route to, valid while
//! the broker's routing generation is unchanged, so the steady-state publish path
//! takes no lock. With `AUTH_FILE`, only subjects the user may publish to are
//! cached, so the permission check costs nothing on a hit (a reload bumps the
//! generation).

use std::sync::Arc;

use rustc_hash::FxHashMap;
use tern_proto::subject::{validate_subject, SubjectError};

use crate::broker::Broker;
use crate::routing::Routes;
use crate::security::SubjectRules;

/// Why a subject has no routes for this session.
#[derive(Debug)]
pub(super) enum Lookup {
    /// Not a valid publish subject.
    Invalid(SubjectError),
    /// The user's publish rules do not allow it.
    Denied,
}

/// Subjects whose routes a session remembers. Past this the cache starts over, so a
/// publisher cycling through unique subjects costs bounded memory (at most ~128 KiB
/// of subjects per connection). nats-server caps its per-client cache at 512 too.
const ROUTE_CACHE_ENTRIES: usize = 512;

/// Remembers what subjects route to.
#[derive(Debug, Default)]
pub(super) struct RouteCache {
    generation: u64,
    /// The last subject looked up and its routes: a publisher usually publishes to
    /// the same subject again, which then costs one comparison.
    last_subject: String,
    last_routes: Option<Arc<Routes>>,
    /// FxHash rather than SipHash: the cache is per connection, so a client that
    /// crafts colliding subjects slows only itself, and only up to
    /// [`ROUTE_CACHE_ENTRIES`].
    entries: FxHashMap<Box<str>, Arc<Routes>>,
}

impl RouteCache {
    /// The routes of a publish subject. Only subjects that passed validation are
    /// cached, so a hit needs no validation. Inlined into the frame handler: it runs
    /// once per PUBLISH.
    #[inline]
    pub(super) fn lookup(
        &mut self,
        subject: &str,
        broker: &Broker,
        publish: Option<&SubjectRules>,
    ) -> Result<Arc<Routes>, Lookup> {
        let generation = broker.routing_generation();
        if generation != self.generation {
            self.entries.clear();
            self.last_routes = None;
            self.generation = generation;
        }
        if let Some(routes) = &self.last_routes {
            if self.last_subject == subject {
                return Ok(routes.clone());
            }
        }
        let routes = match self.entries.get(subject) {
            Some(routes) => routes.clone(),
            None => {
                validate_subject(subject).map_err(Lookup::Invalid)?;
                if publish.is_some_and(|rules| !rules.permits_subject(subject)) {
                    return Err(Lookup::Denied);
                }
                let routes = Arc::new(broker.routes_for(subject));
                if self.entries.len() >= ROUTE_CACHE_ENTRIES {
                    self.entries.clear();
                }
                self.entries.insert(subject.into(), routes.clone());
                routes
            }
        };
        self.last_subject.clear();
        self.last_subject.push_str(subject);
        self.last_routes = Some(routes.clone());
        Ok(routes)
    }
}
