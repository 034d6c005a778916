//! GPU groups and vGPUs.

use super::*;

impl Xapi {
    pub(super) fn gpu_group_create(&self, p: &[Value]) -> R {
        let mut f = Record::new();
        f.insert("name_label".into(), s(arg_str(&p[1], "name_label")?));
        f.insert(
            "name_description".into(),
            s(arg_str(&p[2], "name_description")?),
        );
        f.insert(
            "other_config".into(),
            Ty::Map
                .coerce(&p[3])
                .ok_or_else(|| ApiError::field_type("other_config"))?,
        );
        self.db
            .write(|tx| Ok(s(tx.create(Known::GPU_group.class(), f.clone()))))
    }

    pub(super) fn vgpu_create(&self, p: &[Value]) -> R {
        let vm = self.check_ref(&p[1], "VM", "VM")?;
        let group = self.check_ref(&p[2], "GPU_group", "GPU_group")?;
        let device = arg_str(&p[3], "device")?.to_owned();
        let oc = Ty::Map
            .coerce(&p[4])
            .ok_or_else(|| ApiError::field_type("other_config"))?;
        let ty = self.check_ref(&p[5], "VGPU_type", "type")?;
        self.db.write(|tx| {
            if tx
                .refs_field(&vm, "VGPUs")
                .iter()
                .any(|v| tx.str_field(v, "device") == device)
            {
                return Err(ApiError::new(
                    codes::DEVICE_ALREADY_EXISTS,
                    [device.clone()],
                ));
            }
            let mut f = Record::new();
            f.insert("VM".into(), s(vm.clone()));
            f.insert("GPU_group".into(), s(group.clone()));
            f.insert("device".into(), s(device.clone()));
            f.insert("other_config".into(), oc.clone());
            f.insert("type".into(), s(ty.clone()));
            Ok(s(tx.create(Known::VGPU.class(), f)))
        })
    }
}
