//! Notice templates as data (`templates/*.toml`, embedded): the texts in Kazakh and Russian, the
//! parameters each needs, and rendering with strict parameter checks.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use shlyuz_kit::error::{ApiError, FieldViolation};

use crate::sms::Language;

/// The embedded template files, in load order.
const TEMPLATE_FILES: &[(&str, &str)] = &[
    ("housing.toml", include_str!("../templates/housing.toml")),
    ("intake.toml", include_str!("../templates/intake.toml")),
    ("jauynger.toml", include_str!("../templates/jauynger.toml")),
    ("system.toml", include_str!("../templates/system.toml")),
];

/// Longest parameter value accepted; longer values would only produce unreadable SMS.
pub const MAX_PARAMETER_CHARS: usize = 500;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    templates: Vec<Template>,
}

/// One template: an id, the parameters it needs and its text per language.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Id, e.g. `housing.offer`.
    pub id: String,
    /// Parameter names the texts use, each as `{name}`.
    pub parameters: Vec<String>,
    /// Kazakh text.
    pub kk: String,
    /// Russian text.
    pub ru: String,
}

impl Template {
    /// The text in `language`.
    pub fn text(&self, language: Language) -> &str {
        match language {
            Language::Kk => &self.kk,
            Language::Ru => &self.ru,
        }
    }
}

/// Every template by id.
#[derive(Debug, Clone)]
pub struct TemplateCatalog {
    templates: BTreeMap<String, Template>,
}

impl TemplateCatalog {
    /// The embedded catalogue; an error means a template file in the crate is broken.
    pub fn embedded() -> anyhow::Result<Self> {
        Self::from_sources(TEMPLATE_FILES)
    }

    /// A catalogue from `(file name, TOML text)` pairs, checked: unique ids, and each text uses
    /// exactly the declared parameters.
    pub fn from_sources(sources: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut templates = BTreeMap::new();
        for (file_name, source) in sources {
            let file: TemplateFile = toml::from_str(source)
                .map_err(|error| anyhow::anyhow!("template file {file_name}: {error}"))?;
            for template in file.templates {
                let declared: BTreeSet<&str> =
                    template.parameters.iter().map(String::as_str).collect();
                for language in [Language::Kk, Language::Ru] {
                    let used = placeholders(template.text(language));
                    if used != declared {
                        anyhow::bail!(
                            "template {} ({}): text uses {:?} but declares {:?}",
                            template.id,
                            language.code(),
                            used,
                            declared
                        );
                    }
                }
                if templates.contains_key(&template.id) {
                    anyhow::bail!("template {} defined twice ({file_name})", template.id);
                }
                templates.insert(template.id.clone(), template);
            }
        }
        Ok(Self { templates })
    }

    /// The template `id`, if any.
    pub fn get(&self, id: &str) -> Option<&Template> {
        self.templates.get(id)
    }

    #[cfg(test)]
    /// Ids of every template.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.templates.keys().map(String::as_str)
    }

    /// Renders `id` in `language` with `parameters`. Unknown template, a missing or unknown
    /// parameter, or an over-long value is `INVALID_ARGUMENT` naming the field.
    pub fn render(
        &self,
        id: &str,
        language: Language,
        parameters: &HashMap<String, String>,
    ) -> Result<String, ApiError> {
        let Some(template) = self.get(id) else {
            return Err(ApiError::invalid_field(
                "template_id",
                format!("unknown template {id:?}"),
            ));
        };
        let mut violations = Vec::new();
        for name in &template.parameters {
            match parameters.get(name) {
                None => violations.push(FieldViolation {
                    field: format!("parameters.{name}"),
                    description: format!("template {id} needs parameter {name:?}"),
                }),
                Some(value) if value.trim().is_empty() => violations.push(FieldViolation {
                    field: format!("parameters.{name}"),
                    description: "must not be empty".to_string(),
                }),
                Some(value) if value.chars().count() > MAX_PARAMETER_CHARS => {
                    violations.push(FieldViolation {
                        field: format!("parameters.{name}"),
                        description: format!("longer than {MAX_PARAMETER_CHARS} characters"),
                    })
                }
                Some(_) => {}
            }
        }
        let mut unknown: Vec<&String> = parameters
            .keys()
            .filter(|name| !template.parameters.contains(name))
            .collect();
        unknown.sort();
        for name in unknown {
            violations.push(FieldViolation {
                field: format!("parameters.{name}"),
                description: format!("template {id} has no parameter {name:?}"),
            });
        }
        if !violations.is_empty() {
            return Err(ApiError::invalid_fields(violations));
        }
        let mut text = template.text(language).to_string();
        for name in &template.parameters {
            if let Some(value) = parameters.get(name) {
                text = text.replace(&format!("{{{name}}}"), value.trim());
            }
        }
        Ok(text)
    }
}

/// The `{name}` placeholders in `text`.
fn placeholders(text: &str) -> BTreeSet<&str> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            break;
        };
        names.insert(&after[..close]);
        rest = &after[close + 1..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameters(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn housing_offer_in_russian_carries_the_seed_codes_verbatim() {
        let catalog = TemplateCatalog::embedded().expect("embedded templates");
        let text = catalog
            .render(
                "housing.offer",
                Language::Ru,
                &parameters(&[
                    ("full_name", "Серіков Асхат Маратович"),
                    ("address", "г. Астана, ул. Кенесары, 10, кв. 5"),
                    ("rooms", "2"),
                    ("area", "54,3"),
                ]),
            )
            .expect("rendered");
        assert!(text.starts_with("Уважаемый Серіков Асхат Маратович!"));
        assert!(text.contains("по адресу: г. Астана, ул. Кенесары, 10, кв. 5, состоящая из 2 комнат с общей площадью 54,3 кв.м."));
        for line in [
            "6521 – Согласен;",
            "6522 – Отказ, квадратура не соответствует нормам положенной площади;",
            "6523 – Отказ, являюсь получателем жилищных выплат;",
            "6524 – Отказ, не состою в трудовых отношениях с ВС РК;",
            "6525 – Отказ, наличие в семье лица с инвалидностью или тяжелой формой хронического заболевания;",
            "6526 – Отказ от служебного жилища;",
            "6527 – Отказ, квадратуру, не соответствующую нормам положенной площади впредь не предлагать.",
        ] {
            assert!(text.contains(line), "missing {line:?}");
        }
    }

    #[test]
    fn register_removal_in_kazakh_is_the_seed_text() {
        let catalog = TemplateCatalog::embedded().expect("embedded templates");
        let text = catalog
            .render(
                "housing.register_removal",
                Language::Kk,
                &parameters(&[
                    ("finding", "тұрғын үйді жекешелендіру шарты"),
                    ("reason", "жекешелендіру шарты бар"),
                ]),
            )
            .expect("rendered");
        assert_eq!(
            text,
            "Құрметті көрсетілетін қызметті алушы!\nҚызметтік тұрғынжайға мұқтаждар есебін түгендеу шеңберінде Сізден тұрғын үйді жекешелендіру шарты анықталды. Осыған байланысты Сіз қызметтік тұрғынжайға мұқтаждар (жекешелендіру шарты бар) есебінен шығарылдыңыз.\nБарлық мәселе бойынша ҚР ҚМ ресми сайтында көрсетілген \"Жедел желі\" телефондары арқылы хабарласа аласыз."
        );
    }

    #[test]
    fn jauynger_status_texts_name_the_seed_statuses() {
        let catalog = TemplateCatalog::embedded().expect("embedded templates");
        let number = parameters(&[("application_number", "J-1")]);
        for (id, status) in [
            ("jauynger.status.accepted", "Принято в работу"),
            (
                "jauynger.status.special_check",
                "Направлено на специальную проверку",
            ),
            (
                "jauynger.status.medical",
                "Направлен на медицинское обследование и психологическое тестирование",
            ),
        ] {
            let text = catalog.render(id, Language::Ru, &number).expect("rendered");
            assert!(text.contains(&format!("\"{status}\"")), "{id}: {text}");
        }
    }

    #[test]
    fn intake_status_templates_take_exactly_what_intake_writes() {
        let catalog = TemplateCatalog::embedded().expect("embedded templates");
        let status = ("status_text", "направлено на специальную проверку");
        let plain = parameters(&[status]);
        for id in [
            "intake.status.submitted",
            "intake.status.accepted",
            "intake.status.special_check",
            "intake.status.agreement_to_sign",
            "intake.status.agreement_signed",
            "intake.status.completed",
            "intake.status.rejected",
        ] {
            for language in [Language::Kk, Language::Ru] {
                let text = catalog.render(id, language, &plain).expect("rendered");
                assert!(
                    text.contains("\"направлено на специальную проверку\""),
                    "{id}: {text}"
                );
            }
        }
        let medical = parameters(&[
            status,
            ("appointment_address", "Көкшетау, Ауельбекова 120, ДДО"),
            ("appointment_time", "01.04.2026 09:30"),
        ]);
        let text = catalog
            .render("intake.status.medical", Language::Ru, &medical)
            .expect("rendered");
        assert!(
            text.contains("по адресу: Көкшетау, Ауельбекова 120, ДДО, время: 01.04.2026 09:30")
        );
        let order = parameters(&[
            status,
            ("unit", "в/ч 12345"),
            ("report_place", "Астана"),
            ("report_time", "02.05.2026 08:00"),
        ]);
        for language in [Language::Kk, Language::Ru] {
            catalog
                .render("intake.status.order_to_report", language, &order)
                .expect("rendered");
        }
        // The medical step without its appointment is refused, not sent half-filled.
        let error = catalog
            .render("intake.status.medical", Language::Kk, &plain)
            .expect_err("appointment missing");
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn every_otp_template_takes_the_code_and_its_lifetime() {
        let catalog = TemplateCatalog::embedded().expect("embedded templates");
        let otp_templates: Vec<&str> = catalog
            .ids()
            .filter(|id| id.starts_with(crate::otp::TEMPLATE_PREFIX))
            .collect();
        assert_eq!(otp_templates, ["otp.code", "otp.consent"]);
        for id in otp_templates {
            let declared = &catalog.get(id).expect("template").parameters;
            for filled in crate::otp::FILLED_PARAMETERS {
                assert!(declared.iter().any(|name| name == filled), "{id}: {filled}");
            }
        }
    }

    #[test]
    fn the_consent_code_says_who_asks_and_for_what_in_both_languages() {
        let catalog = TemplateCatalog::embedded().expect("embedded templates");
        let text = catalog
            .render(
                "otp.consent",
                Language::Kk,
                &parameters(&[
                    ("participant", "intake"),
                    ("purpose", "MILITARY_RECRUITMENT"),
                    ("code", "123456"),
                    ("ttl_minutes", "5"),
                ]),
            )
            .expect("rendered");
        assert_eq!(
            text,
            "intake дербес деректеріңізге қол жеткізуге келісім сұрайды (MILITARY_RECRUITMENT). \
             Растау коды: 123456, 5 минут жарамды. / intake запрашивает согласие на доступ к \
             персональным данным (MILITARY_RECRUITMENT). Код подтверждения: 123456, действует 5 мин."
        );
    }

    #[test]
    fn a_missing_parameter_is_named() {
        let catalog = TemplateCatalog::embedded().expect("embedded templates");
        let error = catalog
            .render(
                "housing.offer",
                Language::Kk,
                &parameters(&[("full_name", "A"), ("address", "B"), ("rooms", "1")]),
            )
            .expect_err("area is missing");
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        let fields: Vec<&str> = error
            .field_violations()
            .iter()
            .map(|violation| violation.field.as_str())
            .collect();
        assert_eq!(fields, ["parameters.area"]);
    }

    #[test]
    fn an_unknown_parameter_or_template_is_named() {
        let catalog = TemplateCatalog::embedded().expect("embedded templates");
        let error = catalog
            .render(
                "jauynger.status.accepted",
                Language::Ru,
                &parameters(&[("application_number", "1"), ("colour", "red")]),
            )
            .expect_err("colour is unknown");
        assert_eq!(error.field_violations()[0].field, "parameters.colour");
        let error = catalog
            .render("no.such", Language::Ru, &HashMap::new())
            .expect_err("unknown template");
        assert_eq!(error.field_violations()[0].field, "template_id");
    }

    #[test]
    fn a_template_whose_text_and_declaration_disagree_is_refused() {
        let broken =
            "[[templates]]\nid = \"x\"\nparameters = [\"a\"]\nkk = \"{a} {b}\"\nru = \"{a}\"\n";
        let error =
            TemplateCatalog::from_sources(&[("broken.toml", broken)]).expect_err("kk uses b");
        assert!(error.to_string().contains("template x (kk)"), "{error}");
    }
}
