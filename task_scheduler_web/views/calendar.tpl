% rebase('base.tpl')
<article data-testid="calendar" data-calendar="{{cal['name']}}">
  <div class="title-row">
    <div>
      <p class="crumbs"><a href="/jobs">{{t('nav.jobs')}}</a> / {{t('cal.crumb')}}</p>
      <h1><span class="mono">{{cal['name']}}</span></h1>
      <p class="lead">{{t('cal.lead')}}</p>
    </div>
  </div>
  <div class="grid-2">
    <section class="panel">
      <div class="panel-head">
        <h2 data-testid="calendar-title">{{t('cal.month', year=cal['year'], month=cal['month_name'] if lang == 'en' else cal['month_number'])}}</h2>
        <nav class="cal-nav">
          <a class="btn" href="?month={{cal['previous']}}" data-testid="calendar-previous">{{t('cal.previous')}}</a>
          <a class="btn" href="?" data-testid="calendar-today">{{t('cal.today')}}</a>
          <a class="btn" href="?month={{cal['next']}}" data-testid="calendar-next">{{t('cal.next')}}</a>
        </nav>
      </div>
      <table class="cal-month" data-testid="calendar-month" data-month="{{cal['month']}}">
        <thead><tr>
          % for key in ('mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'):
          <th scope="col">{{t('cal.wd.' + key)}}</th>
          % end
        </tr></thead>
        <tbody>
          % for week in cal['weeks']:
          <tr>
            % for day in week:
            % if day is None:
            <td class="cal-out"></td>
            % else:
            <td class="cal-{{day['kind']}}{{' cal-today' if day['date'] == cal['today'] else ''}}" data-testid="calendar-day" data-date="{{day['date'].isoformat()}}" data-kind="{{day['kind']}}" title="{{t('cal.kind.' + day['kind'])}}">
              <span class="cal-num">{{day['date'].day}}</span>
              % if day['holiday']:
              <span class="cal-name">{{day['holiday']}}</span>
              % elif day['kind'] in ('excluded', 'included'):
              <span class="cal-name">{{t('cal.cell.' + day['kind'])}}</span>
              % end
            </td>
            % end
            % end
          </tr>
          % end
        </tbody>
      </table>
      <ul class="cal-legend">
        % for kind in ('business', 'weekend', 'holiday', 'excluded', 'included'):
        <li><span class="cal-swatch cal-{{kind}}" aria-hidden="true"></span> {{t('cal.kind.' + kind)}}</li>
        % end
      </ul>
    </section>
    <section class="panel">
      <h2>{{t('cal.rules')}}</h2>
      <dl class="facts">
        <dt>{{t('cal.weekdays')}}</dt><dd>{{' '.join(t('cal.wd.' + d) for d in cal['weekdays'])}}</dd>
        <dt>{{t('cal.holidays')}}</dt><dd class="mono">{{cal['holidays'] or t('form.none')}}{{' / ' + cal['subdiv'] if cal['subdiv'] else ''}}</dd>
        <dt>{{t('cal.exclude')}}</dt><dd class="mono">{{', '.join(a if a == b else a + '..' + b for a, b in cal['exclude']) or t('form.none')}}</dd>
        <dt>{{t('cal.include')}}</dt><dd class="mono">{{', '.join(a if a == b else a + '..' + b for a, b in cal['include']) or t('form.none')}}</dd>
        <dt>{{t('cal.jobs')}}</dt><dd>
          % for job_id in cal['jobs']:
          <a class="mono" href="/jobs/{{job_id}}" data-testid="calendar-job">{{job_id}}</a>
          % end
          % if not cal['jobs']:
          {{t('form.none')}}
          % end
        </dd>
      </dl>
      <p class="note">{{t('cal.api_note', name=cal['name'])}}</p>
    </section>
  </div>
</article>
