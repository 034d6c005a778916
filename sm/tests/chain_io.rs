//! Data through copy-on-write chains: partial-cluster writes over backing data, reads that
//! cross layers, top layers of another cluster size, all checked against a model of the
//! disk.

mod common;

use common::*;
use sm::image::{self, Image, CLUSTER_SIZE};

/// qemu-img's default cluster size, the largest the pieces are measured against.
const BIG: u64 = 64 << 10;
use sm::SrDriver;

const SIZE: u64 = 8 * MIB;

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes `n` random pieces (any sector-aligned or unaligned offset, 1 byte to 3 clusters
/// long) into `img` and the same into `model`.
fn scribble(img: &Image, model: &mut [u8], rng: &mut Rng, n: usize, seed: u8) {
    for i in 0..n {
        let len = match rng.below(4) {
            0 => 1 + rng.below(511),
            1 => 4096,
            2 => 512 * (1 + rng.below(16)),
            _ => 1 + rng.below(3 * BIG),
        };
        let off = rng.below(SIZE - len);
        let off = if rng.below(2) == 0 { off & !511 } else { off };
        let data = pattern(seed.wrapping_add(i as u8), off, len);
        img.write(&data, off).unwrap();
        model[off as usize..(off + len) as usize].copy_from_slice(&data);
    }
}

/// Reads the whole disk in pieces of random sizes and compares with `model`.
fn check(img: &Image, model: &[u8], rng: &mut Rng, what: &str) {
    let mut off = 0;
    while off < SIZE {
        let len = (1 + rng.below(5 * BIG / 2)).min(SIZE - off);
        let mut buf = vec![0u8; len as usize];
        img.read(&mut buf, off).unwrap();
        if buf[..] != model[off as usize..(off + len) as usize] {
            let first = (0..len as usize)
                .find(|&i| buf[i] != model[off as usize + i])
                .unwrap();
            panic!("{what}: differs at byte {}", off + first as u64);
        }
        off += len;
    }
}

/// A disk three snapshots deep, each layer written in random pieces, then a top layer of
/// each cluster size written in random pieces over it: every read matches the model,
/// after reopening too, and the layers under the top are unchanged.
#[test]
fn partial_cluster_writes_over_a_three_deep_chain_read_back_exactly() {
    for top_cluster in [CLUSTER_SIZE, 16 << 10, BIG] {
        let (_d, sr) = new_sr();
        let v = sr.vdi_create("disk", SIZE).unwrap().uuid;
        let mut model = vec![0u8; SIZE as usize];
        let mut rng = Rng(0x5eed ^ top_cluster);
        let mut snaps = Vec::new();
        for layer in 0..3u8 {
            let img = Image::open(&image(&sr, v), true).unwrap();
            scribble(&img, &mut model, &mut rng, 60, layer * 50);
            img.flush().unwrap();
            drop(img);
            snaps.push((sr.vdi_snapshot(v).unwrap().uuid, model.clone()));
        }
        // The leaf the last snapshot made, replaced by one of `top_cluster`.
        let leaf = image(&sr, v);
        let parent = image::read_header(&leaf).unwrap().backing_file.unwrap();
        std::fs::remove_file(&leaf).unwrap();
        image::create_with_cluster_size(&leaf, SIZE, Some(&parent), top_cluster).unwrap();

        let img = Image::open(&leaf, true).unwrap();
        check(&img, &model, &mut rng, "the new leaf before writing");
        scribble(&img, &mut model, &mut rng, 200, 200);
        check(&img, &model, &mut rng, "the leaf after writing");
        img.flush().unwrap();
        drop(img);
        let img = Image::open(&leaf, false).unwrap();
        check(&img, &model, &mut rng, "the leaf reopened");
        for (i, (s, want)) in snaps.iter().enumerate() {
            let img = Image::open(&image(&sr, *s), false).unwrap();
            check(&img, want, &mut rng, &format!("snapshot {i}"));
        }
        // qemu-img reads the same (and finds the chain consistent).
        qemu_verify(&leaf, &model);
    }
}

#[test]
fn cluster_sizes_outside_qcow2s_range_are_refused() {
    let d = tempfile::tempdir().unwrap();
    for bad in [0, 256, 3 << 10, 4 << 20] {
        let p = d.path().join(format!("{bad}.qcow2"));
        let e = image::create_with_cluster_size(&p, MIB, None, bad).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{bad}");
        assert!(!p.exists(), "nothing was created for {bad}");
    }
}
