//! What to render: the categories, the defect kinds, the dataset's config and the sample
//! specs of each split (a sample's seed comes from its spec).

use crate::noise::{fnv1a, mix};

/// The object and texture families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Woven,
    Grain,
    Tiles,
    Carpet,
    Washer,
    Pill,
    Screw,
}

impl Category {
    pub const ALL: [Category; 7] = [
        Category::Woven,
        Category::Grain,
        Category::Tiles,
        Category::Carpet,
        Category::Washer,
        Category::Pill,
        Category::Screw,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Woven => "woven",
            Category::Grain => "grain",
            Category::Tiles => "tiles",
            Category::Carpet => "carpet",
            Category::Washer => "washer",
            Category::Pill => "pill",
            Category::Screw => "screw",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    pub fn is_object(self) -> bool {
        matches!(self, Category::Washer | Category::Pill | Category::Screw)
    }

    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|c| c.name()).collect()
    }
}

/// The defect kinds (the `test/<defect>` directory names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DefectKind {
    Scratch,
    Crack,
    Hole,
    Stain,
    Color,
    Contamination,
    Missing,
    /// Geometry only (xyz datasets): a depression, visible in RGB through shading alone.
    Dent,
    /// Geometry only (xyz datasets): a raised bump.
    Bump,
}

impl DefectKind {
    pub fn name(self) -> &'static str {
        match self {
            DefectKind::Scratch => "scratch",
            DefectKind::Crack => "crack",
            DefectKind::Hole => "hole",
            DefectKind::Stain => "stain",
            DefectKind::Color => "color",
            DefectKind::Contamination => "contamination",
            DefectKind::Missing => "missing",
            DefectKind::Dent => "dent",
            DefectKind::Bump => "bump",
        }
    }

    /// The kinds used by a dataset; dents and bumps only when it has an xyz channel.
    pub fn kinds(xyz: bool) -> Vec<DefectKind> {
        use DefectKind::*;
        let mut k = vec![Scratch, Crack, Hole, Stain, Color, Contamination, Missing];
        if xyz {
            k.extend([Dent, Bump]);
        }
        k
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::kinds(true).into_iter().find(|k| k.name() == name)
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub seed: u64,
    pub categories: Vec<Category>,
    /// Nominal training images per category (the validation split is held out of these).
    pub train: usize,
    pub validation_fraction: f64,
    pub test_good: usize,
    pub test_defective: usize,
    /// Height and width of every image.
    pub size: usize,
    pub xyz: bool,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            categories: Category::ALL.to_vec(),
            train: 50,
            validation_fraction: 0.2,
            test_good: 10,
            test_defective: 20,
            size: 256,
            xyz: false,
        }
    }
}

/// Which directory of the dataset a sample lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    Train,
    Test,
}

/// One sample of the dataset: enough to render it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleSpec {
    pub category: Category,
    pub part: Part,
    /// `None` for nominal samples.
    pub defect: Option<DefectKind>,
    /// Index within (category, part, defect): the file stem `NNN`.
    pub index: usize,
}

impl SampleSpec {
    pub fn defect_name(&self) -> &'static str {
        self.defect.map_or("good", DefectKind::name)
    }
    pub fn stem(&self) -> String {
        format!("{:03}", self.index)
    }
    pub(crate) fn seed(&self, base: u64) -> u64 {
        let part = match self.part {
            Part::Train => "train",
            Part::Test => "test",
        };
        let key = format!("{}/{part}/{}/{}", self.category.name(), self.defect_name(), self.index);
        mix(base ^ fnv1a(key.as_bytes()))
    }
}

/// The training images of one category, in listing order.
pub fn train_specs(cfg: &SynthConfig, category: Category) -> Vec<SampleSpec> {
    (0..cfg.train).map(|index| SampleSpec { category, part: Part::Train, defect: None, index }).collect()
}

/// The test images of one category, sorted by (defect directory, index) as a directory
/// listing would be. Defective image `j` gets kind `kinds[j % n]`, so every kind appears.
pub fn test_specs(cfg: &SynthConfig, category: Category) -> Vec<SampleSpec> {
    let kinds = DefectKind::kinds(cfg.xyz);
    let mut specs: Vec<SampleSpec> =
        (0..cfg.test_good).map(|index| SampleSpec { category, part: Part::Test, defect: None, index }).collect();
    for j in 0..cfg.test_defective {
        let kind = kinds[j % kinds.len()];
        specs.push(SampleSpec { category, part: Part::Test, defect: Some(kind), index: j / kinds.len() });
    }
    specs.sort_by(|a, b| (a.defect_name(), a.index).cmp(&(b.defect_name(), b.index)));
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_covers_every_kind_sorted() {
        let c = SynthConfig { seed: 7, train: 6, test_good: 2, test_defective: 9, xyz: true, ..SynthConfig::default() };
        let specs = test_specs(&c, Category::Tiles);
        assert_eq!(specs.len(), 11);
        let names: Vec<&str> = specs.iter().map(|s| s.defect_name()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for k in DefectKind::kinds(true) {
            assert!(names.contains(&k.name()), "{k:?} missing");
        }
        assert!(!DefectKind::kinds(false).contains(&DefectKind::Dent));
    }
}
