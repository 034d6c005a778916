//! `VM.suspend` and `VM.resume` as XAPI does them (`Xapi_xenops.suspend`/`resume`): the
//! save image goes into a new VDI of type `suspend` in the suspend SR
//! (`Helpers.choose_suspend_sr`), named by `VM.suspend_VDI` while the VM is Suspended and
//! destroyed once it runs again; the image inside is xenopsd's ([`crate::suspend_image`]).

use super::*;
use crate::xenops::{self, PowerState, VmConfig};

/// The space a suspend image may take (`Xapi_xenops.suspend`'s `space_needed`): the
/// memory with 20 % and 5 % margins, plus 100 MiB; in whole sectors, as the SR sizes disks.
pub fn suspend_image_size(memory_static_max: u64) -> u64 {
    let bytes = (memory_static_max as f64 * 1.2 * 1.05) as u64 + (100 << 20);
    bytes.next_multiple_of(512)
}

impl Xapi {
    /// The SR a suspend image of `vm` goes to (`Helpers.choose_suspend_sr`): the VM's
    /// `suspend_SR`, else the pool's `suspend_image_SR`, else its host's
    /// `suspend_image_sr`, the first that this host has a PBD for; else `VM_NO_SUSPEND_SR`.
    fn choose_suspend_sr(&self, vm: &str) -> Result<String, ApiError> {
        self.db
            .read(|v| {
                let pool = v.all("pool").into_iter().next().unwrap_or_default();
                let host = v.str_field(vm, "resident_on");
                let here = |sr: &String| {
                    v.class_of(sr) == Some("SR")
                        && v.refs_field(sr, "PBDs")
                            .iter()
                            .any(|p| v.str_field(p, "host") == host)
                };
                [
                    v.str_field(vm, "suspend_SR"),
                    v.str_field(&pool, "suspend_image_SR"),
                    v.str_field(&host, "suspend_image_sr"),
                ]
                .into_iter()
                .find(here)
            })
            .ok_or_else(|| ApiError::new(codes::VM_NO_SUSPEND_SR, [vm]))
    }

    /// A new VDI for `cfg`'s suspend image in `sr`, as `Xapi_xenops.suspend` makes it
    /// through `VDI.create`.
    fn create_suspend_vdi(&self, cfg: &VmConfig, sr: &str) -> Result<String, ApiError> {
        if self.attached_driver(sr)?.is_none() {
            // Only an SR with a storage driver holds data here.
            return Err(ApiError::new(codes::SR_OPERATION_NOT_SUPPORTED, [sr]));
        }
        let size = suspend_image_size(cfg.memory).to_string();
        let map = |pairs: &[(&str, &str)]| {
            Value::Struct(pairs.iter().map(|(k, v)| ((*k).into(), s(*v))).collect())
        };
        let uuid = cfg.uuid.to_string();
        let rec = Value::Struct(
            [
                ("name_label", s("Suspend image")),
                ("name_description", s("Suspend image")),
                ("SR", s(sr)),
                ("virtual_size", s(size.clone())),
                ("type", s("suspend")),
                ("sharable", Value::Bool(false)),
                ("read_only", Value::Bool(false)),
                ("other_config", map(&[])),
                (
                    "sm_config",
                    map(&[("vmhint", &uuid), ("initial_allocation", &size)]),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        );
        // An SR without room fails here with its own error (`SR_FULL`); XAPI releases after
        // the pinned datamodel map it to SR_SUSPEND_SPACE_INSUFFICIENT, not in its table.
        let vdi = self.vdi_create(&[s(""), rec])?;
        Ok(vdi.as_str().unwrap_or_default().to_owned())
    }

    /// Runs `f` on the image of `vdi`, attached and activated for it (writable or not).
    fn with_vdi_attached<T>(
        &self,
        vdi: &str,
        writable: bool,
        f: impl FnOnce(&std::path::Path) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let (sr, u) = self.vdi_sr(vdi)?;
        let d = self
            .attached_driver(&sr)?
            .ok_or_else(|| ApiError::new(codes::SR_OPERATION_NOT_SUPPORTED, [sr.as_str()]))?;
        let err = |e: sm::Error| ApiError::new(e.code(), [e.to_string()]);
        let info = d.vdi_attach(u, writable).map_err(err)?;
        let r = d.vdi_activate(u).map_err(err).and_then(|()| {
            let r = f(&info.path);
            let _ = d.vdi_deactivate(u);
            r
        });
        let _ = d.vdi_detach(u);
        if writable {
            // The image took space: the SR's utilisation shows it.
            let _ = self.refresh_sr(&sr, d.as_ref());
        }
        r
    }

    /// `VM.suspend`: the guest is asked to suspend (`control/shutdown`), its memory and
    /// vCPUs are saved with libxenguest's save stream into a new suspend VDI (named by
    /// `suspend_VDI` from the start), its domain and device backends are torn down, and the
    /// VM is Suspended. On a failure the VDI is destroyed and the VM keeps running.
    pub(super) fn vm_suspend(&self, vm: &str) -> R {
        let r = self.with_vm_operation(vm, "suspend", || self.suspend_locked(vm))?;
        self.ha_release(vm);
        Ok(r)
    }

    fn suspend_locked(&self, vm: &str) -> R {
        let (cfg, domid) = self.running(vm, &[PowerState::Running], "running")?;
        let sr = self.choose_suspend_sr(vm)?;
        let vdi = self.create_suspend_vdi(&cfg, &sr)?;
        self.db.write(|tx| {
            tx.set(vm, "suspend_VDI", s(vdi.clone()));
            Ok::<_, ApiError>(())
        })?;
        self.progress(0.1);
        let t0 = std::time::Instant::now();
        let saved = self.with_vdi_attached(&vdi, true, |path| {
            crate::suspend_image::write(path, |f| {
                xenops::suspend(&self.backend, &cfg, domid, f, self.clean_shutdown_timeout())
            })
        });
        let len = match saved {
            Ok(len) => len,
            Err(e) => {
                tracing::error!(vm, %e, "suspend failed; the VM runs on");
                // `vdi_destroy` forgets it as the VM's suspend_VDI too.
                if let Err(d) = self.vdi_destroy(&vdi) {
                    tracing::warn!(vm, vdi, %d, "cannot destroy the suspend VDI");
                    let _ = self.db.write(|tx| {
                        tx.set(vm, "suspend_VDI", s(NULL_REF));
                        Ok::<_, ApiError>(())
                    });
                }
                return Err(e);
            }
        };
        tracing::info!(
            vm,
            domid = domid.0,
            ms = t0.elapsed().as_millis() as u64,
            vdi,
            bytes = len,
            "suspended"
        );
        self.db.write(|tx| {
            self.mark_stopped(tx, vm, PowerState::Suspended);
            self.update_host_memory(tx);
            Ok(s(""))
        })
    }

    /// `VM.resume`/`resume_on`: the image in the VM's suspend VDI is restored into a new
    /// domain (`xc_domain_restore`), its devices plugged again (backends and device model
    /// restarted), and it runs on (or stays paused); then the suspend VDI is destroyed. A
    /// Suspended VM without one is reset to Halted and refused (`VM_HAS_NO_SUSPEND_VDI`), as
    /// XAPI does; a failed restore leaves it Suspended with its VDI.
    pub(super) fn vm_resume(&self, vm: &str, paused: bool) -> R {
        self.with_vm_operation(vm, "resume", || self.resume_locked(vm, paused))
    }

    fn resume_locked(&self, vm: &str, paused: bool) -> R {
        let mut cfg = self.vm_config(vm)?;
        if cfg.power_state != PowerState::Suspended {
            return Err(Self::bad_power(vm, "suspended", cfg.power_state));
        }
        let vdi = self.db.read(|v| {
            let vdi = v.str_field(vm, "suspend_VDI");
            (v.class_of(&vdi) == Some("VDI")).then_some(vdi)
        });
        let Some(vdi) = vdi else {
            tracing::info!(vm, "VM suspend VDI not found; the VM is reset to Halted");
            self.db.write(|tx| {
                self.mark_halted(tx, vm);
                tx.set(vm, "suspend_VDI", s(NULL_REF));
                Ok::<_, ApiError>(())
            })?;
            return Err(ApiError::new(codes::VM_HAS_NO_SUSPEND_VDI, ["VM", vm]));
        };
        let t0 = std::time::Instant::now();
        let r = self.with_vdi_attached(&vdi, false, |path| {
            crate::suspend_image::read(path, |f| self.run_domain(&mut cfg, paused, Some(f)))
        })?;
        tracing::info!(vm, ms = t0.elapsed().as_millis() as u64, "resumed");
        self.drop_suspend_vdi(vm);
        Ok(r)
    }

    /// Destroys the VM's suspend VDI, if it has one, and forgets it.
    pub(super) fn drop_suspend_vdi(&self, vm: &str) {
        let vdi = self.db.read(|v| v.str_field(vm, "suspend_VDI"));
        if self.db.read(|v| v.class_of(&vdi) == Some("VDI")) {
            if let Err(e) = self.vdi_destroy(&vdi) {
                tracing::warn!(vm, vdi, %e, "cannot destroy the suspend VDI");
            }
        }
        let _ = self.db.write(|tx| {
            tx.set(vm, "suspend_VDI", s(NULL_REF));
            Ok::<_, ApiError>(())
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_image_has_room_for_the_memory_as_xapi_computes_it() {
        // 128 MiB: 128 × 1.26 MiB + 100 MiB.
        let got = super::suspend_image_size(128 << 20);
        let want = (128u64 << 20) as f64 * 1.26 + (100u64 << 20) as f64;
        assert!((got as f64 - want).abs() < 512.0, "{got} {want}");
        assert_eq!(got % 512, 0);
    }
}
