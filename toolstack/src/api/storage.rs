//! VBDs (userdevice allocation); SRs and VDIs are in `sr`.

use super::*;

impl Xapi {
    pub(super) fn vbd_create(&self, rec: &Value) -> R {
        let class = Known::VBD.class();
        self.db.write(|tx| {
            let mut f = self.check_record(tx, class, rec)?;
            let vm = f
                .get("VM")
                .and_then(Value::as_str)
                .unwrap_or(NULL_REF)
                .to_owned();
            Self::check_ref_tx(tx, &vm, "VM")?;
            let empty = f.get("empty") == Some(&Value::Bool(true));
            let vdi = f
                .get("VDI")
                .and_then(Value::as_str)
                .unwrap_or(NULL_REF)
                .to_owned();
            if !empty || vdi != NULL_REF {
                Self::check_ref_tx(tx, &vdi, "VDI")?;
            }
            let used: Vec<String> = tx
                .refs_field(&vm, "VBDs")
                .iter()
                .map(|v| tx.str_field(v, "userdevice"))
                .collect();
            let mut ud = f
                .get("userdevice")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if ud.is_empty() || ud == "autodetect" {
                ud = (0..)
                    .map(|i: u32| i.to_string())
                    .find(|c| !used.contains(c))
                    .expect("free slot");
            }
            // xapi_vbd.ml `create`: INVALID_DEVICE [userdevice].
            let n: u32 = ud
                .parse()
                .map_err(|_| ApiError::new(codes::INVALID_DEVICE, [ud.clone()]))?;
            if used.contains(&ud) {
                return Err(ApiError::new(codes::DEVICE_ALREADY_EXISTS, [ud]));
            }
            f.insert("userdevice".into(), s(ud));
            f.insert("device".into(), s(vbd_device(n).1));
            let vbd = tx.create(class, f);
            super::operations::refresh_device(tx, &vbd);
            Ok(s(vbd))
        })
    }
}
