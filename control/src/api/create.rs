//! Create: admission, server-set fields, the kind's addresses, and one
//! conditional write (the key absent, the namespace as seen and not
//! terminating, every address free).

use flotilla_objects::admit;
use flotilla_objects::api::{ApiError, Reason, Written};
use flotilla_objects::registry::{self, ResourceInfo};
use rand::Rng;
use serde_json::Value;

use super::cas::Reader;
use super::json::{decode, is_terminating, meta_mut, splice_rv, str_at, with_rv};
use super::{invalid, object_key, stamp_new, ApiServer, CAS_RETRIES};
use crate::store::{Cond, Op, Txn, TxnResult};

fn random_suffix() -> String {
    // Kubernetes' alphabet for generated names: no vowels, no look-alikes.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

impl ApiServer {
    /// Whether the namespace at `ns_key` is terminating, and its mod
    /// revision; None when it does not exist. A first look (not
    /// `linearizable`) takes it from the namespaces' watch cache when that
    /// holds it, without a store read or decoding; the write is conditioned
    /// on the revision seen, so a stale answer fails it and the retry reads
    /// through the leader.
    async fn namespace_seen(
        &self,
        ns_key: &[u8],
        linearizable: bool,
    ) -> Result<Option<(bool, i64)>, ApiError> {
        if !linearizable {
            let cached = self.caches.get(&registry::NAMESPACE).object(ns_key);
            if let Some(o) = cached {
                let rev = str_at(o.object(), "/metadata/resourceVersion").parse::<i64>();
                if let Ok(rev) = rev {
                    return Ok(Some((is_terminating(o.object()), rev)));
                }
            }
        }
        Ok(match self.read(ns_key, linearizable).await? {
            Some(kv) => Some((is_terminating(&decode(&kv)?), kv.mod_revision)),
            None => None,
        })
    }

    /// Create an object. The namespace must exist and not be terminating.
    pub async fn create(
        &self,
        info: &'static ResourceInfo,
        req_ns: &str,
        object: Value,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        Ok(self.create_served(info, req_ns, object, dry_run).await?.0)
    }

    /// [`ApiServer::create`], and the created object's JSON when it is at
    /// hand without serializing it: the bytes written to the store, with the
    /// resourceVersion spliced in.
    #[tracing::instrument(level = "debug", skip(self, object), fields(kind = info.kind))]
    pub async fn create_served(
        &self,
        info: &'static ResourceInfo,
        req_ns: &str,
        object: Value,
        dry_run: bool,
    ) -> Result<(Written, Option<Vec<u8>>), ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        let ns = self.namespace_for(info, req_ns, &object)?;
        let mut object = object;
        if info.namespaced {
            meta_mut(&mut object).insert("namespace".into(), Value::String(ns.clone()));
        } else {
            meta_mut(&mut object).remove("namespace");
        }
        // Generated names are chosen before validation, so that they are checked too.
        if str_at(&object, "/metadata/name").is_empty() {
            let g = str_at(&object, "/metadata/generateName").to_string();
            if !g.is_empty() {
                meta_mut(&mut object).insert(
                    "name".into(),
                    Value::String(format!("{g}{}", random_suffix())),
                );
            }
        }
        let name = str_at(&object, "/metadata/name").to_string();
        let admitted = admit(info, object).map_err(|e| invalid(info, &name, &e))?;
        let strategy = self.strategy(info);
        let mut obj = admitted.object;
        self.restrict(info, None, Some(&obj))?;
        stamp_new(
            &mut obj,
            uuid::Uuid::new_v4().to_string(),
            self.now_str(),
            info.has_status,
        );
        if info.has_status && !strategy.keeps_status_on_create() {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
        strategy.prepare_create(&mut obj);
        if info.kind == "Pod" {
            self.resolve_pod_priority(&mut obj).await?;
        }
        if dry_run {
            let w = Written {
                object: obj,
                warnings: admitted.warnings,
                changed: false,
            };
            return Ok((w, None));
        }
        let key = object_key(info, &ns, &name);
        let ns_key = object_key(&registry::NAMESPACE, "", &ns);
        let forbidden = || {
            ApiError::new(
                Reason::Forbidden,
                format!("{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", info.qualified_name()),
            )
        };
        // The addresses the user named (held before any is picked).
        let requested = strategy.held(&obj);
        // The first look at the namespace may be served locally; the write is
        // conditioned on the namespace revision seen, so a namespace deleted
        // (or marked terminating) meanwhile fails it, and the retry reads
        // through the leader.
        let mut rd = Reader::default();
        for _ in 0..CAS_RETRIES {
            // A round allocates from the object as given; one that
            // allocates nothing writes the object itself, uncopied.
            let mut picked = strategy.allocates().then(|| obj.clone());
            let round = match picked.as_mut() {
                Some(p) => p,
                None => &mut obj,
            };
            let mut conds = vec![Cond::Absent(key.clone())];
            if info.namespaced {
                match self.namespace_seen(&ns_key, rd.linearizable).await? {
                    Some((terminating, mod_revision)) => {
                        if terminating {
                            return Err(forbidden());
                        }
                        conds.push(Cond::ModRevision(ns_key.clone(), mod_revision));
                    }
                    None if rd.linearizable => return Err(ApiError::not_found("namespaces", &ns)),
                    None => conds.push(Cond::Present(ns_key.clone())),
                }
            }
            strategy.allocate(round, None)?;
            let held = strategy.held(round);
            let mut ops = Vec::new();
            for k in &held {
                conds.push(Cond::Absent(k.clone()));
                ops.push(Op::Put(k.clone(), key.clone()));
            }
            let stored = self.encode_for_store(round)?;
            ops.push(Op::Put(key.clone(), stored.clone()));
            match self.write(Txn::new(conds, ops)).await? {
                TxnResult::Committed(rev) => {
                    let w = Written {
                        object: with_rv(picked.unwrap_or(obj), rev),
                        warnings: admitted.warnings,
                        changed: true,
                    };
                    return Ok((w, splice_rv(&stored, rev)));
                }
                TxnResult::Replayed { key, .. } => {
                    // An earlier attempt of this call created it.
                    return match self.replayed(&key).await? {
                        Some(object) => {
                            let w = Written {
                                object,
                                warnings: admitted.warnings,
                                changed: true,
                            };
                            Ok((w, None))
                        }
                        None => Err(ApiError::new(
                            Reason::Conflict,
                            format!(
                                "{} \"{name}\" was created by an earlier attempt of this request and deleted since",
                                info.qualified_name()
                            ),
                        )),
                    };
                }
                TxnResult::Failed => {
                    rd.escalate();
                    if self.read(&key, true).await?.is_some() {
                        return Err(ApiError::already_exists(&info.qualified_name(), &name));
                    }
                    // Otherwise the namespace changed (looked at again on the
                    // next round) or an address was taken meanwhile: one the
                    // user named is an error, one we picked is picked again.
                    for k in &held {
                        if requested.contains(k) && self.read(k, true).await?.is_some() {
                            return Err(strategy.taken(&name, k));
                        }
                    }
                }
            }
        }
        Err(ApiError::new(
            Reason::Unavailable,
            format!(
                "{} \"{name}\" could not be created: its namespace or addresses kept changing; try again",
                info.qualified_name()
            ),
        ))
    }
}
