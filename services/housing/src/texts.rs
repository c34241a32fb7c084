//! The exact texts of the seeds: the seed-003 offer SMS (Russian original) and the seed-002
//! removal notice to the personal cabinet (Kazakh original).

use crate::model::RemovalReason;

/// The seed-003 offer SMS for `full_name`, filled in with the dwelling's address, rooms and area.
pub fn offer_sms(full_name: &str, address: &str, rooms: i64, total_area_m2: f64) -> String {
    format!(
        "Уважаемый {full_name}!\n\
         В рамках обеспечения служебным жилищем военнослужащих и работников ВС РК Вам распределено \
         служебное жилище по адресу: {address}, состоящая из {rooms} комнат с общей площадью \
         {area} кв.м.\n\
         Просим Вас в течении 48 часов подтвердить согласие либо отказ используя одну из следующих \
         комбинаций. В случае отсутствия ответа в указанный срок, будет считаться, что Вы \
         отказались от служебного жилища (6526):\n\
         6521 – Согласен;\n\
         6522 – Отказ, квадратура не соответствует нормам положенной площади;\n\
         6523 – Отказ, являюсь получателем жилищных выплат;\n\
         6524 – Отказ, не состою в трудовых отношениях с ВС РК;\n\
         6525 – Отказ, наличие в семье лица с инвалидностью или тяжелой формой хронического \
         заболевания;\n\
         6526 – Отказ от служебного жилища;\n\
         6527 – Отказ, квадратуру, не соответствующую нормам положенной площади впредь не \
         предлагать.\n\
         По всем вопросам можете обратиться по телефонам \"Горячая линия\" указанным на \
         официальном сайте МО РК.",
        area = format_area(total_area_m2),
    )
}

/// notify's template of the offer SMS (its `ru` text is [`offer_sms`] verbatim).
pub const OFFER_TEMPLATE: &str = "housing.offer";

/// notify's template of the removal notice (its `kk` text is [`removal_notice`] verbatim).
pub const REMOVAL_TEMPLATE: &str = "housing.register_removal";

/// The parameters of [`OFFER_TEMPLATE`], as a JSON object of strings (stored in the outbox).
pub fn offer_parameters(full_name: &str, address: &str, rooms: i64, total_area_m2: f64) -> String {
    serde_json::json!({
        "full_name": full_name,
        "address": address,
        "rooms": rooms.to_string(),
        "area": format_area(total_area_m2),
    })
    .to_string()
}

/// The parameters of [`REMOVAL_TEMPLATE`], as a JSON object of strings (stored in the outbox).
pub fn removal_parameters(reason: RemovalReason) -> String {
    let (finding, reason_name) = removal_phrases(reason);
    serde_json::json!({ "finding": finding, "reason": reason_name }).to_string()
}

/// The seed-002 removal notice, the blanks filled with what was found and the reason.
pub fn removal_notice(reason: RemovalReason) -> String {
    let (finding, reason_name) = removal_phrases(reason);
    format!(
        "Құрметті көрсетілетін қызметті алушы!\n\
         Қызметтік тұрғынжайға мұқтаждар есебін түгендеу шеңберінде Сізден {finding} анықталды. \
         Осыған байланысты Сіз қызметтік тұрғынжайға мұқтаждар ({reason_name}) есебінен \
         шығарылдыңыз.\n\
         Барлық мәселе бойынша ҚР ҚМ ресми сайтында көрсетілген \"Жедел желі\" телефондары арқылы \
         хабарласа аласыз."
    )
}

/// What was found and the reason's name, in the seed's own Kazakh wording where it has one.
fn removal_phrases(reason: RemovalReason) -> (&'static str, &'static str) {
    match reason {
        RemovalReason::PrivatisationContract => (
            "тұрғынжайды жекешелендіру туралы шарт",
            "тұрғынжайды жекешелендіру туралы шарттың болуы",
        ),
        RemovalReason::EquityContract => (
            "тұрғын үй салуға үлестік қатысу туралы шарт",
            "тұрғын үй салуға үлестік қатысу туралы шарттың болуы",
        ),
        RemovalReason::EarlierServiceHousing => (
            "бұрынғы қызмет орны бойынша қызметтік тұрғынжай",
            "бұрынғы қызмет орны бойынша қызметтік тұрғынжайдың болуы",
        ),
        RemovalReason::PermanentUseInLocality => (
            "осы елді мекенде мемлекеттік тұрғын үй қорынан тұрақты пайдаланудағы тұрғынжай",
            "тұрақты пайдаланудағы тұрғынжайдың болуы",
        ),
        RemovalReason::MissingOrDead => (
            "отбасы мүшесінің хабар-ошарсыз кетті деп танылуы немесе қайтыс болды деп жариялануы",
            "хабар-ошарсыз кетті деп танылу немесе қайтыс болды деп жариялану",
        ),
        RemovalReason::NotACitizen => (
            "Қазақстан Республикасы азаматтығының жоқтығы",
            "Қазақстан Республикасының азаматы болып табылмау",
        ),
        RemovalReason::ResidenceAbroad => (
            "басқа елде тұрақты тұрғылықты жердің болуы",
            "басқа елде тұрақты тұрғылықты жердің болуы",
        ),
        RemovalReason::Incapable => (
            "сот әрекетке қабілетсіз деп тануы",
            "әрекетке қабілетсіз деп танылу",
        ),
        RemovalReason::Imprisoned => (
            "бас бостандығынан айыру орнында болу",
            "бас бостандығынан айыру орнында болу",
        ),
    }
}

/// `54` for a whole number of square metres, `54.3` otherwise.
fn format_area(total_area_m2: f64) -> String {
    let tenths = (total_area_m2 * 10.0).round() / 10.0;
    if tenths.fract() == 0.0 {
        format!("{tenths:.0}")
    } else {
        format!("{tenths:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_sms_carries_the_dwelling_and_every_code() {
        let text = offer_sms(
            "Сейтқали Арман Болатұлы",
            "г. Астана, ул. Мангилик Ел, 10-25",
            2,
            54.3,
        );
        assert!(text.starts_with("Уважаемый Сейтқали Арман Болатұлы!\n"));
        assert!(text.contains(
            "по адресу: г. Астана, ул. Мангилик Ел, 10-25, состоящая из 2 комнат с общей площадью 54.3 кв.м."
        ));
        assert!(text.contains("6527 – Отказ, квадратуру, не соответствующую нормам положенной площади впредь не предлагать."));
        for code in 6521..=6527 {
            assert!(text.contains(&format!("{code} – ")), "code {code} missing");
        }
        assert_eq!(offer_sms("А", "Б", 1, 36.0).matches("36 кв.м.").count(), 1);
    }

    #[test]
    fn removal_notice_names_the_reason() {
        let text = removal_notice(RemovalReason::EquityContract);
        assert!(text.starts_with("Құрметті көрсетілетін қызметті алушы!\n"));
        assert!(text.contains("Сізден тұрғын үй салуға үлестік қатысу туралы шарт анықталды."));
        assert!(text.contains("(тұрғын үй салуға үлестік қатысу туралы шарттың болуы) есебінен"));
    }
}
