% for event in (run or {}).get('sla_breaches') or []:
<span class="badge b-sla" data-testid="sla-badge" data-event="{{event}}">{{h['word']('event', event)}}</span>
% end
