//! SRs (with their PBD) and VBDs (userdevice allocation).

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

    pub(super) fn sr_create(&self, p: &[Value]) -> R {
        let host = self.check_ref(&p[1], "host", "host")?;
        let dc = Ty::Map
            .coerce(&p[2])
            .ok_or_else(|| ApiError::field_type("device_config"))?;
        let size = Ty::Int
            .coerce(&p[3])
            .ok_or_else(|| ApiError::field_type("physical_size"))?;
        let mut f = Record::new();
        f.insert("name_label".into(), s(arg_str(&p[4], "name_label")?));
        f.insert(
            "name_description".into(),
            s(arg_str(&p[5], "name_description")?),
        );
        f.insert("type".into(), s(arg_str(&p[6], "type")?));
        f.insert("content_type".into(), s(arg_str(&p[7], "content_type")?));
        f.insert("shared".into(), Value::Bool(arg_bool(&p[8], "shared")?));
        f.insert(
            "sm_config".into(),
            Ty::Map
                .coerce(&p[9])
                .ok_or_else(|| ApiError::field_type("sm_config"))?,
        );
        f.insert("physical_size".into(), size);
        self.db.write(|tx| {
            let sr = tx.create(Known::SR.class(), f);
            let mut pbd = Record::new();
            pbd.insert("host".into(), s(host.clone()));
            pbd.insert("SR".into(), s(sr.clone()));
            pbd.insert("device_config".into(), dc);
            pbd.insert("currently_attached".into(), Value::Bool(true));
            tx.create(Known::PBD.class(), pbd);
            Ok(s(sr))
        })
    }
}
