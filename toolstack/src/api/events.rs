//! Events: `event.from` (tokens are database generations), and the older
//! `event.register`/`event.next`/`event.unregister`.

use super::*;

impl Xapi {
    pub(super) fn classes_arg(v: &Value) -> Result<Option<HashSet<&'static str>>, ApiError> {
        let a = v
            .as_array()
            .ok_or_else(|| ApiError::field_type("classes"))?;
        let mut out = HashSet::new();
        for c in a {
            let c = c.as_str().ok_or_else(|| ApiError::field_type("classes"))?;
            if c == "*" {
                return Ok(None);
            }
            // XAPI accepts `vm/OpaqueRef:...` too; the class part is what matters here.
            let c = c.split('/').next().unwrap_or(c);
            if let Some(cls) = datamodel::class(c) {
                out.insert(cls.name);
            }
        }
        Ok(Some(out))
    }

    /// `event.from`'s subscriptions (`xapi_event.ml` `Subscription`): `*`, a class, or one
    /// object as `class/ref`. Returns the classes to read and, per class, the only objects
    /// wanted (`None`: the whole class).
    #[allow(clippy::type_complexity)]
    fn subscriptions(
        v: &Value,
    ) -> Result<Option<HashMap<&'static str, Option<HashSet<String>>>>, ApiError> {
        let a = v
            .as_array()
            .ok_or_else(|| ApiError::field_type("classes"))?;
        let mut out: HashMap<&'static str, Option<HashSet<String>>> = HashMap::new();
        for c in a {
            let c = c.as_str().ok_or_else(|| ApiError::field_type("classes"))?;
            if c == "*" {
                return Ok(None);
            }
            let (cls, obj) = match c.split_once('/') {
                Some((cls, obj)) => (cls, Some(obj)),
                None => (c, None),
            };
            let Some(cls) = datamodel::class(cls) else {
                continue;
            };
            match (
                out.entry(cls.name).or_insert_with(|| Some(HashSet::new())),
                obj,
            ) {
                (whole @ Some(_), None) => *whole = None,
                (Some(objs), Some(o)) => {
                    objs.insert(o.to_owned());
                }
                (None, _) => {}
            }
        }
        Ok(Some(out))
    }

    /// `valid_ref_counts`: every class (lower case) and how many objects it has now.
    fn valid_ref_counts(&self) -> Value {
        self.db.read(|v| {
            Value::Struct(
                datamodel::classes()
                    .iter()
                    .map(|c| {
                        (
                            c.name.to_ascii_lowercase(),
                            Value::Int(v.count(c.name) as i64),
                        )
                    })
                    .collect(),
            )
        })
    }

    pub(super) fn event_records(changes: Vec<crate::db::Change>) -> Value {
        Value::Array(
            changes
                .into_iter()
                .map(|c| {
                    let mut m = BTreeMap::new();
                    m.insert("id".into(), s(c.gen.to_string()));
                    m.insert("timestamp".into(), s(c.gen.to_string()));
                    m.insert("class".into(), s(c.class.to_ascii_lowercase()));
                    m.insert("operation".into(), s(c.op));
                    m.insert("ref".into(), s(c.r#ref));
                    m.insert("snapshot".into(), Value::Struct(c.snapshot));
                    Value::Struct(m)
                })
                .collect(),
        )
    }

    pub(super) fn event(&self, method: &str, msg: &str, p: &[Value]) -> R {
        match msg {
            "from" => {
                arity(method, 4, p.len())?;
                self.session(&p[0])?;
                let subs = Self::subscriptions(&p[1])?;
                let classes: Option<HashSet<&'static str>> =
                    subs.as_ref().map(|m| m.keys().copied().collect());
                let wanted = |c: &crate::db::Change| match &subs {
                    None => true,
                    Some(m) => m
                        .get(c.class)
                        .is_some_and(|objs| objs.as_ref().is_none_or(|o| o.contains(&c.r#ref))),
                };
                let token = arg_str(&p[2], "token")?;
                let since: u64 = if token.is_empty() {
                    0
                } else {
                    token
                        .parse()
                        .map_err(|_| ApiError::new("EVENT_FROM_TOKEN_PARSE_FAILURE", [token]))?
                };
                // Deletions before the token left the window: the caller must list again.
                if self.db.events_lost(since) {
                    return Err(ApiError::new(codes::EVENTS_LOST, Vec::<String>::new()));
                }
                let timeout = match &p[3] {
                    Value::Double(d) => *d,
                    Value::Int(i) => *i as f64,
                    _ => return Err(ApiError::field_type("timeout")),
                };
                let wait =
                    Duration::from_secs_f64(timeout.clamp(0.0, self.max_event_wait.as_secs_f64()));
                let deadline = std::time::Instant::now() + wait;
                loop {
                    let (mut changes, gen) = self.db.changes_since(classes.as_ref(), since);
                    changes.retain(wanted);
                    let now = std::time::Instant::now();
                    if !changes.is_empty() || since == 0 || now >= deadline {
                        let mut m = BTreeMap::new();
                        m.insert("events".into(), Self::event_records(changes));
                        m.insert("valid_ref_counts".into(), self.valid_ref_counts());
                        m.insert("token".into(), s(gen.to_string()));
                        return Ok(Value::Struct(m));
                    }
                    self.db.wait_past(gen, deadline - now);
                }
            }
            "register" => {
                arity(method, 2, p.len())?;
                let sess = self.session(&p[0])?;
                let classes = Self::classes_arg(&p[1])?
                    .unwrap_or_else(|| datamodel::classes().iter().map(|c| c.name).collect());
                let gen = self.db.generation();
                let mut regs = self.registrations.lock();
                let e = regs.entry(sess).or_insert_with(|| (HashSet::new(), gen));
                e.0.extend(classes);
                Ok(s(""))
            }
            "unregister" => {
                arity(method, 2, p.len())?;
                let sess = self.session(&p[0])?;
                let classes = Self::classes_arg(&p[1])?;
                let mut regs = self.registrations.lock();
                if let Some(e) = regs.get_mut(&sess) {
                    match classes {
                        None => e.0.clear(),
                        Some(c) => e.0.retain(|x| !c.contains(x)),
                    }
                }
                Ok(s(""))
            }
            "next" => {
                arity(method, 1, p.len())?;
                let sess = self.session(&p[0])?;
                let (classes, since) = self
                    .registrations
                    .lock()
                    .get(&sess)
                    .cloned()
                    .ok_or_else(|| ApiError::new(codes::SESSION_NOT_REGISTERED, [sess.clone()]))?;
                if self.db.events_lost(since) {
                    return Err(ApiError::new(codes::EVENTS_LOST, Vec::<String>::new()));
                }
                let deadline = std::time::Instant::now() + self.max_event_wait;
                loop {
                    let (changes, gen) = self.db.changes_since(Some(&classes), since);
                    if !changes.is_empty() || std::time::Instant::now() >= deadline {
                        if let Some(e) = self.registrations.lock().get_mut(&sess) {
                            e.1 = gen;
                        }
                        return Ok(Self::event_records(changes));
                    }
                    self.db.wait_past(
                        gen,
                        deadline.saturating_duration_since(std::time::Instant::now()),
                    );
                }
            }
            "get_current_id" => {
                arity(method, 1, p.len())?;
                self.session(&p[0])?;
                Ok(s(self.db.generation().to_string()))
            }
            _ => Err(ApiError::new(codes::MESSAGE_METHOD_UNKNOWN, [method])),
        }
    }
}
